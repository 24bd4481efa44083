"""Models that every seed's build of a scenario can share: trained once, kept beside the fixtures.

Some models a build needs do not depend on the fixture's seed at all: a clean model trained on the
whole clean training set from a seed of its own is the same model for seed 0's fixture and seed 7's.
Witches' Brew's null population (`[attack] shared_references`) is such a set: training its 8 clean
ResNet-18s again for every seed made the scenario's build 11 trainings a seed, and sharing them
leaves 3. The models' key is everything that determines them (data, model, training, their name,
the fixture format), so scenarios whose recipes agree on those share them too.

Layout: `<root>/<profile>/shared-models/<name>-<key16>/` with `weights.safetensors` and `meta.json`
(written last, with the weights' SHA-256), built in a temporary sibling directory and renamed into
place under a file lock, like a fixture: concurrent builds of several seeds train each model once,
and nobody reads half a model. A corrupt entry is moved aside with a warning and trained again.
Without a root (a build outside the cache) the models are kept in memory for the store's lifetime.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from unlearn_audit.scenarios.checksums import META_FILE, entry_problems, sha256_file
from unlearn_audit.scenarios.recipes import FIXTURE_FORMAT_VERSION, ScenarioRecipe, spec_key

if TYPE_CHECKING:
    import torch
    from torch import nn

SHARED_DIR = "shared-models"
SHARED_SEED = -1
"""The base seed shared models derive their initialisation and batch order from (with their name): no audit seed is
negative, so a shared model is independent of every fixture's own models."""
WEIGHTS_FILE = "weights.safetensors"


def shared_model_spec(recipe: ScenarioRecipe, name: str) -> dict[str, Any]:
    """Everything that determines the shared model `name` of `recipe` (no seed, no attack, no checks)."""
    return {
        "format": FIXTURE_FORMAT_VERSION,
        "profile": recipe.profile,
        "data": recipe.data,
        "model": recipe.model,
        "training": recipe.training.cache_spec(),
        "name": name,
    }


def shared_model_key(recipe: ScenarioRecipe, name: str) -> str:
    return spec_key(shared_model_spec(recipe, name))


@dataclass(frozen=True)
class SharedModelRecord:
    """Where a build's shared model came from: the fixture's meta lists one per model it used."""

    name: str
    key: str
    sha256: str | None  # of the stored weights; None for a store without a root
    trained_seconds: float | None  # None when it was read from the store instead of trained

    def as_meta(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "sha256": self.sha256,
            "trained_here": self.trained_seconds is not None,
            "trained_seconds": self.trained_seconds,
        }


class SharedModelStore:
    """Shared models of one cache root (or of memory only, when `root` is None)."""

    def __init__(self, root: Path | str | None) -> None:
        self.root = Path(root) if root is not None else None
        self._memory: dict[str, dict[str, torch.Tensor]] = {}

    def path_for(self, recipe: ScenarioRecipe, name: str) -> Path:
        if self.root is None:
            raise ValueError("a store without a root keeps its models in memory")
        return self.root / recipe.profile / SHARED_DIR / f"{name}-{shared_model_key(recipe, name)[:16]}"

    def get_or_train(
        self, recipe: ScenarioRecipe, name: str, train: Callable[[], nn.Module]
    ) -> tuple[dict[str, torch.Tensor], SharedModelRecord]:
        """The state dict of shared model `name` of `recipe` (CPU tensors), trained by `train()` if no intact
        copy is stored, and the record of where it came from."""
        key = shared_model_key(recipe, name)
        if self.root is None:
            return self._in_memory(key, name, train)
        path = self.path_for(recipe, name)
        if not self.problems(path):
            return self._load(path, name, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            problems = self.problems(path)
            if not problems:
                return self._load(path, name, key)  # another build trained it while this one waited
            if path.exists():
                if (path / META_FILE).is_file():
                    warnings.warn(f"training corrupt shared model again: {'; '.join(problems)}", stacklevel=2)
                shutil.rmtree(path)
            return self._train_into(path, recipe, name, key, train)

    def problems(self, path: Path) -> list[str]:
        """What is wrong with the stored model at `path` (empty when it is intact)."""
        return entry_problems(path)

    def entries(self, profile: str | None = None) -> list[tuple[Path, dict[str, Any]]]:
        """Every stored shared model (of one profile, or all) with its metadata (empty where unreadable)."""
        if self.root is None or not self.root.is_dir():
            return []
        out = []
        pattern = f"{profile if profile is not None else '*'}/{SHARED_DIR}/*/{META_FILE}"
        for meta_path in sorted(self.root.glob(pattern)):
            try:
                out.append((meta_path.parent, json.loads(meta_path.read_text())))
            except (OSError, ValueError):
                out.append((meta_path.parent, {}))
        return out

    def clean(self, profile: str | None = None) -> int:
        """Delete the stored shared models (of one profile, or all), and leftovers of interrupted trainings."""
        if self.root is None or not self.root.is_dir():
            return 0
        removed = len(self.entries(profile))
        for folder in self.root.glob(f"{profile if profile is not None else '*'}/{SHARED_DIR}"):
            shutil.rmtree(folder, ignore_errors=True)
        return removed

    def _in_memory(
        self, key: str, name: str, train: Callable[[], nn.Module]
    ) -> tuple[dict[str, torch.Tensor], SharedModelRecord]:
        if key in self._memory:
            return self._memory[key], SharedModelRecord(name, key, None, None)
        started = time.perf_counter()
        state = _cpu_state(train())
        self._memory[key] = state
        return state, SharedModelRecord(name, key, None, time.perf_counter() - started)

    def _load(self, path: Path, name: str, key: str) -> tuple[dict[str, torch.Tensor], SharedModelRecord]:
        from safetensors.torch import load_file

        meta = json.loads((path / META_FILE).read_text())
        return load_file(str(path / WEIGHTS_FILE)), SharedModelRecord(name, key, meta["sha256"][WEIGHTS_FILE], None)

    def _train_into(
        self, path: Path, recipe: ScenarioRecipe, name: str, key: str, train: Callable[[], nn.Module]
    ) -> tuple[dict[str, torch.Tensor], SharedModelRecord]:
        import torch
        from safetensors.torch import save_file

        from unlearn_audit import __version__

        started = time.perf_counter()
        model = train()
        seconds = time.perf_counter() - started
        state = _cpu_state(model)
        device = str(next(model.parameters()).device)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            save_file(state, str(tmp / WEIGHTS_FILE))
            digest = sha256_file(tmp / WEIGHTS_FILE)
            meta = {
                "format": FIXTURE_FORMAT_VERSION,
                "kind": "shared_model",
                "spec": shared_model_spec(recipe, name),
                "key": key,
                "versions": {"unlearn_audit": __version__, "torch": torch.__version__},
                "device": device,
                "train_seconds": seconds,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "sha256": {WEIGHTS_FILE: digest},
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return state, SharedModelRecord(name, key, digest, seconds)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
