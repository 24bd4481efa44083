"""The fixture cache: built scenario fixtures on disk, keyed by recipe hash and format version.

Layout: `<root>/<profile>/<scenario>-seed<k>-<key16>/` holding `weights.safetensors`,
`data.safetensors` and `meta.json` (written last, with the SHA-256 of the other two). A
fixture is built in a temporary sibling directory and renamed into place, under a file lock,
so that concurrent pytest-xdist workers build it once and nobody ever reads half a fixture.
Weights are safetensors: loading never unpickles code.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from unlearn_audit.scenarios.checksums import META_FILE, entry_problems, sha256_file
from unlearn_audit.scenarios.recipes import FIXTURE_FORMAT_VERSION, ScenarioRecipe
from unlearn_audit.scenarios.shared_models import SharedModelStore

WEIGHTS_FILE = "weights.safetensors"
DATA_FILE = "data.safetensors"
CACHE_ENV = "UNLEARN_AUDIT_CACHE"


def default_cache_dir() -> Path:
    """`$UNLEARN_AUDIT_CACHE`, else the platform's user cache directory."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("unlearn-audit", appauthor=False))


class FixtureCorruptError(RuntimeError):
    """A cached fixture does not match its recorded checksums."""


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    meta: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.meta.get('profile')}/{self.meta.get('scenario')} seed {self.meta.get('seed')}"


class FixtureCache:
    """Fixtures on the local disk, optionally mirrored from a shared remote cache (`remote`: an
    fsspec URL such as s3://bucket/prefix, or a read-only https:// or hf:// one; see `scenarios.remote`).
    With a remote, `root` is the local cache under which the mirror lives."""

    def __init__(self, root: Path | str | None = None, remote: str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.remote = None
        if remote is not None:
            from unlearn_audit.scenarios.remote import RemoteStore, mirror_dir

            self.remote = RemoteStore(remote)
            self.root = mirror_dir(self.remote.url, self.root)
        self.shared_models = SharedModelStore(self.root)
        """Models the builds of several seeds share (`scenarios.shared_models`): local, never published, since
        they are needed only to build and a fixture keeps what it measured on them."""

    def path_for(self, recipe: ScenarioRecipe, seed: int) -> Path:
        """Where the (recipe, seed) entry lives, built or not."""
        return self.root / recipe.profile / f"{recipe.name}-seed{seed}-{recipe.cache_key(seed)[:16]}"

    def is_built(self, recipe: ScenarioRecipe, seed: int) -> bool:
        """Whether the (recipe, seed) entry has its metadata file."""
        return (self.path_for(recipe, seed) / META_FILE).is_file()

    def verify_path(self, path: Path) -> list[str]:
        """Problems found with the fixture at `path` (empty when it is intact)."""
        return entry_problems(path)

    def get_or_build(self, recipe: ScenarioRecipe, seed: int, progress: Any = None, device: Any = None) -> Path:
        """Path of an intact fixture for (recipe, seed), building it first if needed.

        A corrupt entry (checksum mismatch) is moved aside with a warning and rebuilt. A build
        trains on `device` (default CPU); the stored fixture is the same wherever it was built.
        """
        path = self.path_for(recipe, seed)
        if (path / META_FILE).is_file() and not self.verify_path(path):
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.remote is not None:
            return self._get_or_build_shared(recipe, seed, path, progress, device)
        with FileLock(str(path) + ".lock"):
            if (path / META_FILE).is_file():
                problems = self.verify_path(path)
                if not problems:
                    return path  # another process built it while we waited
                warnings.warn(f"rebuilding corrupt fixture {path}: {'; '.join(problems)}", stacklevel=2)
                shutil.rmtree(path)
            elif path.exists():
                shutil.rmtree(path)  # left over from a crashed build that had not written meta.json
            self._build_into(recipe, seed, path, progress, device)
        return path

    def _get_or_build_shared(self, recipe: ScenarioRecipe, seed: int, path: Path, progress: Any, device: Any) -> Path:
        """From the remote cache into the local mirror, or built here (by one machine) and published."""
        remote = self.remote
        assert remote is not None
        rel = path.relative_to(self.root).as_posix()
        with FileLock(str(path) + ".lock"):  # processes of this machine
            if (path / META_FILE).is_file() and not self.verify_path(path):
                return path
            if path.exists():
                shutil.rmtree(path)
            if remote.read_only:
                if remote.has(rel):
                    remote.fetch(rel, path)
                else:
                    warnings.warn(
                        f"{remote.url} has no {rel}: building it here, into the local mirror {self.root} "
                        "(a read-only cache is never written)",
                        stacklevel=3,
                    )
                    self._build_into(recipe, seed, path, progress, device)
            elif not remote.has(rel):
                with remote.build_lock(rel, done=lambda: remote.has(rel)) as mine:
                    if mine and not remote.has(rel):
                        self._build_into(recipe, seed, path, progress, device)
                        remote.publish(rel, path)
                        return path
                remote.fetch(rel, path)
            else:
                remote.fetch(rel, path)
            problems = self.verify_path(path)
            if problems:
                raise FixtureCorruptError("; ".join(problems))
        return path

    def _build_into(self, recipe: ScenarioRecipe, seed: int, path: Path, progress: Any, device: Any = None) -> None:
        import torch
        from safetensors.torch import save_file

        from unlearn_audit import __version__
        from unlearn_audit.scenarios.build import build_scenario
        from unlearn_audit.scenarios.provenance import ENVIRONMENT_KEY, build_environment

        started = time.perf_counter()
        device = torch.device(device) if device is not None else torch.device("cpu")
        built = build_scenario(recipe, seed, progress, device=device, shared=self.shared_models)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            weights = {
                f"{m}.{k}": v.detach().cpu().contiguous() for m, sd in built.weights.items() for k, v in sd.items()
            }
            save_file(weights, str(tmp / WEIGHTS_FILE))
            save_file(built.tensors, str(tmp / DATA_FILE))
            meta = {
                "format": FIXTURE_FORMAT_VERSION,
                "profile": recipe.profile,
                "scenario": recipe.name,
                "seed": seed,
                "recipe_hash": recipe.cache_key(seed),
                "build_spec": recipe.build_spec(seed),
                "versions": {"unlearn_audit": __version__, "torch": torch.__version__},
                "device": str(device),
                ENVIRONMENT_KEY: build_environment(device),
                "build_seconds": time.perf_counter() - started,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **built.meta,
                "sha256": {WEIGHTS_FILE: sha256_file(tmp / WEIGHTS_FILE), DATA_FILE: sha256_file(tmp / DATA_FILE)},
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def entries(self) -> list[CacheEntry]:
        """Every entry under the cache root with its metadata (empty where unreadable)."""
        out: list[CacheEntry] = []
        if not self.root.is_dir():
            return out
        for meta_path in sorted(self.root.glob(f"*/*/{META_FILE}")):
            try:
                out.append(CacheEntry(meta_path.parent, json.loads(meta_path.read_text())))
            except (OSError, ValueError):
                out.append(CacheEntry(meta_path.parent, {}))
        return out

    def clean(self, profile: str | None = None) -> int:
        """Delete cached fixtures and shared models (of one profile, or all); returns how many fixtures were
        removed (`shared_models.entries` counts the shared models first)."""
        removed = 0
        for entry in self.entries():
            if profile is None or entry.meta.get("profile") == profile:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
        for leftover in self.root.glob("*/.*-seed*"):  # temp dirs of interrupted builds
            shutil.rmtree(leftover, ignore_errors=True)
        self.shared_models.clean(profile)
        return removed
