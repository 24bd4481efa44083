"""CIFAR-10 for the `cifar10-resnet18` profile, and the synthetic CIFAR-shaped stand-in used on CPU.

Real data. `load_cifar10_split` reads the CIFAR-10 "python version" (`cifar-10-batches-py/`:
pickled dicts with `data`, uint8 N x 3072, and `labels`) from the data directory
(`$UNLEARN_AUDIT_DATA`, else the platform user data dir, under `cifar10/`). When the files are not
there it downloads them through torchvision (the `[cifar]` extra), which is the only thing
torchvision is used for; the files are then read by this module, so loading needs neither
torchvision nor a network once they exist. The pickles are read with a restricted unpickler that
only rebuilds numpy arrays (they are data, not code). Without the batches, it reads the file that
`unlearn-audit data import cifar10 PATH` writes from an image-folder tree (`image_folder.py`).
Errors name the directory to fill and the extra to install.

Stand-in. `synthetic_cifar_split` generates a small, learnable, CIFAR-shaped data set (3 x 32 x 32
in [0, 1], 10 classes: a smooth random template per class, a distractor template of another class,
a random translation and pixel noise) from a seed, with no download. It exists so that the whole
profile (data pipeline, ResNet-18, the fast trainer with its augmentation, the attacks and every
check) runs on a CPU in CI, through the profile `cifar10-resnet18-standin` (see `recipes.py`).
"""

from __future__ import annotations

import importlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unlearn_audit.errors import ResourceUnavailable
from unlearn_audit.profiles.cifar.image_folder import IMPORTED_FILE, read_imported
from unlearn_audit.profiles.split import Split

DATA_ENV = "UNLEARN_AUDIT_DATA"
BATCHES_DIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
CIFAR_EXTRA_HINT = "pip install 'unlearn-audit[cifar]'"
IMPORT_HINT = "or import an image-folder tree with `unlearn-audit data import cifar10 PATH`"


class CifarDataError(ResourceUnavailable):
    """CIFAR-10 is not in the data directory and could not be fetched; the message says what to do."""


def default_data_dir() -> Path:
    """Where CIFAR-10 lives: `$UNLEARN_AUDIT_DATA/cifar10`, else `<platform user data dir>/cifar10`."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser() / "cifar10"
    from platformdirs import user_data_dir

    return Path(user_data_dir("unlearn-audit", appauthor=False)) / "cifar10"


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays; refuses any other global (no code runs)."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch file")
        return getattr(importlib.import_module(module), name)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch file -> (uint8 images N x 3 x 32 x 32, int64 labels N)."""
    with open(path, "rb") as f:
        raw = _ArrayUnpickler(f, encoding="latin1").load()
    if not isinstance(raw, dict):
        raise CifarDataError(f"{path}: not a CIFAR-10 batch (expected a pickled dict)")
    raw = {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
    data = np.asarray(raw["data"], dtype=np.uint8)
    labels = np.asarray(raw.get("labels", raw.get("fine_labels")), dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise CifarDataError(f"{path}: expected data N x 3072 and N labels, got {data.shape} and {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def _have_files(root: Path) -> bool:
    return all((root / BATCHES_DIR / name).is_file() for name in (*TRAIN_FILES, TEST_FILE))


def _download(root: Path) -> None:
    """Fetch CIFAR-10 into `root` with torchvision (the `[cifar]` extra)."""
    try:
        import torchvision  # noqa: F401  (import errors are reported as such)
        from torchvision.datasets import CIFAR10
    except Exception as exc:  # ImportError, or a torchvision built for another torch
        raise CifarDataError(
            f"CIFAR-10 is not in {root / BATCHES_DIR} and torchvision, which downloads it, cannot be imported "
            f"({type(exc).__name__}: {exc}). Install the extra ({CIFAR_EXTRA_HINT}), or put the CIFAR-10 python "
            f"version (the files {', '.join(TRAIN_FILES)}, {TEST_FILE} from cifar-10-python.tar.gz) into "
            f"{root / BATCHES_DIR}, or point ${DATA_ENV} at a directory whose cifar10/ subdirectory holds them, "
            f"{IMPORT_HINT}."
        ) from exc
    root.mkdir(parents=True, exist_ok=True)
    try:
        CIFAR10(str(root), train=True, download=True)
        CIFAR10(str(root), train=False, download=True)
    except Exception as exc:  # no network, a proxy, a full disk...
        raise CifarDataError(
            f"CIFAR-10 is not in {root / BATCHES_DIR} and could not be downloaded ({type(exc).__name__}: {exc}). "
            f"On a machine that can reach it, download cifar-10-python.tar.gz and unpack it into {root} "
            f"(so that {root / BATCHES_DIR / TEST_FILE} exists), or set ${DATA_ENV} to a directory whose "
            f"cifar10/ subdirectory holds {BATCHES_DIR}/, {IMPORT_HINT}."
        ) from exc


def load_cifar10_split(root: str | None = None, download: bool = True) -> Split:
    """The CIFAR-10 train (50,000) and test (10,000) sets as float tensors in [0, 1].

    `root` (a recipe's `[data] root`, else `default_data_dir()`) must hold `cifar-10-batches-py/`,
    else an imported image-folder tree (`IMPORTED_FILE`); with `download`, when it holds neither,
    the batches are fetched through torchvision first.
    """
    base = Path(root).expanduser() if root else default_data_dir()
    if not _have_files(base) and (base / IMPORTED_FILE).is_file():
        train_x, train_y, test_x, test_y = read_imported(base / IMPORTED_FILE)
        return Split(_to_float(train_x), torch.from_numpy(train_y), _to_float(test_x), torch.from_numpy(test_y), 10)
    if not _have_files(base):
        if not download:
            raise CifarDataError(
                f"CIFAR-10 is not in {base / BATCHES_DIR} (and download is off): put the CIFAR-10 "
                f"python version there, or set ${DATA_ENV}, {IMPORT_HINT}."
            )
        _download(base)
    parts = [read_batch(base / BATCHES_DIR / name) for name in TRAIN_FILES]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = read_batch(base / BATCHES_DIR / TEST_FILE)
    return Split(_to_float(train_x), torch.from_numpy(train_y), _to_float(test_x), torch.from_numpy(test_y), 10)


def _to_float(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).float().div_(255.0).contiguous()


@dataclass(frozen=True)
class SyntheticCifarSpec:
    """Parameters of the stand-in (the recipe's `[data]` table, `source = "synthetic_cifar"`)."""

    num_train: int = 1000
    num_test: int = 500
    num_classes: int = 10
    seed: int = 0
    signal: float = 0.18  # amplitude of the class template
    distractor: float = 0.12  # amplitude of another class's template, mixed in at random
    noise: float = 0.08  # i.i.d. pixel noise
    max_shift: int = 3  # random translation, pixels


def synthetic_cifar_split(**options: Any) -> Split:
    """A learnable CIFAR-shaped data set generated from a seed (see the module docstring)."""
    spec = SyntheticCifarSpec(**options)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(spec.seed)
    coarse = torch.randn(spec.num_classes, 3, 4, 4, generator=g)
    templates = F.interpolate(coarse, size=(32, 32), mode="bicubic", align_corners=False)
    templates = templates / templates.flatten(1).std(1).view(-1, 1, 1, 1)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % spec.num_classes
        y = y[torch.randperm(n, generator=g)]
        other = (y + torch.randint(1, spec.num_classes, (n,), generator=g)) % spec.num_classes
        mix = torch.rand(n, 1, 1, 1, generator=g)
        x = 0.5 + spec.signal * templates[y] + spec.distractor * mix * templates[other]
        x = x + spec.noise * torch.randn(n, 3, 32, 32, generator=g)
        shifts = torch.randint(-spec.max_shift, spec.max_shift + 1, (n, 2), generator=g)
        x = torch.stack([torch.roll(img, (int(s[0]), int(s[1])), dims=(1, 2)) for img, s in zip(x, shifts)])
        return x.clamp_(0.0, 1.0).contiguous(), y

    train_x, train_y = make(spec.num_train)
    test_x, test_y = make(spec.num_test)
    return Split(train_x, train_y, test_x, test_y, spec.num_classes)
