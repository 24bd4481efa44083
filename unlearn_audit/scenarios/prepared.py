"""Whether a cached fixture's reference measurements are already stored, decided without torch.

Why: under pytest-xdist the controller used to import torch (about 1.5 CPU-s), load every fixture
and run every check on the retrain reference before it started a single worker, only to find on a
warm cache that everything was stored already: 2-3 s of a 17 s four-method run, on the critical
path. A fixture whose measurements have been prepared carries a marker file, keyed by everything
that changes them: the recipe's check options, the harness's source code, the device type, torch's
version, its CPU threads and the CPU's kernels (ATEN_CPU_CAPABILITY and the CPU's feature flags).
Where all of these can be told without importing torch and every marker is there, the controller
leaves the fixtures to the workers, which only load them.

The marker is a hint, never a source of values: the measurements themselves are keyed by the
torch-side context (see `scenarios.measurements`), so a marker that is wrong (say, two torch
installs with the same version and different kernels) costs workers a recomputation, never a
wrong verdict.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

from unlearn_audit.engine.devices import default_device_may_be_gpu

PREPARED_PREFIX = "prepared-"
MEASUREMENTS_DIR = "measurements"


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """SHA-256 over the harness's Python source: any change to it invalidates stored measurements."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def cpu_identity() -> str | None:
    """The CPU's model and feature flags (they decide which kernels torch picks), or None where they
    cannot be read (outside Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    wanted: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "flags", "features", "cpu implementer", "cpu part") and key not in wanted:
            wanted[key] = " ".join(value.split())
    if not wanted:
        return None
    body = json.dumps({"machine": platform.machine(), **wanted}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:32]


def numerics_environment(device_type: str, threads: int) -> dict[str, Any] | None:
    """What changes floating-point results besides the code, told without importing torch; None when
    something cannot be told that way (no torch distribution, an unreadable CPU, a GPU device)."""
    if device_type != "cpu":
        return None  # GPU kernels depend on the GPU and cuDNN, which only torch can name
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None
    cpu = cpu_identity()
    if cpu is None:
        return None
    return {
        "torch": version,
        "threads": threads,
        "cpu": cpu,
        "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY", ""),
    }


def device_type_without_torch(requested: str | None) -> str | None:
    """The device type an audit will use, where that is clear without importing torch: 'cpu' when
    asked for, or by default where torch cannot find a GPU (a build without a GPU backend, or a machine
    that shows no GPU for it); None otherwise."""
    if requested is not None:
        return "cpu" if requested.strip() == "cpu" else None
    return "cpu" if default_device_may_be_gpu() is False else None


def marker_path(fixture_path: Path, check_options: dict[str, Any], device_type: str, threads: int) -> Path | None:
    """Where the marker of this fixture's prepared measurements lives, or None when the environment
    cannot be told without torch (then nothing is marked and the controller prepares as before)."""
    environment = numerics_environment(device_type, threads)
    if environment is None:
        return None
    key = json.dumps(
        {"options": check_options, "device": device_type, "code": code_fingerprint(), "environment": environment},
        sort_keys=True,
        default=str,
    )
    return fixture_path / MEASUREMENTS_DIR / f"{PREPARED_PREFIX}{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def mark_prepared(
    fixture_path: Path, check_options: dict[str, Any], device_type: str, threads: int, numerics: dict[str, Any]
) -> None:
    """Record that the fixture's reference measurements are stored (atomically; best effort: a cache
    that cannot be written is prepared again next time)."""
    path = marker_path(fixture_path, check_options, device_type, threads)
    if path is None:
        return
    try:
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump({"numerics": numerics}, f, sort_keys=True, default=str)
        os.replace(tmp, path)
    except OSError:
        pass


def references_ready(
    cache_dir: str | None, profile: str, needed: list[tuple[str, int]], device: str | None, threads: int
) -> bool:
    """Whether every needed (scenario, seed) fixture is in the local cache with its reference
    measurements prepared for this environment, told without importing torch. False whenever in
    doubt (a shared remote cache, a GPU, an unknown environment, a missing marker)."""
    from unlearn_audit.scenarios.remote import is_remote

    if is_remote(cache_dir):
        return False  # the local mirror may lack entries that the remote has: fetched with torch, as before
    device_type = device_type_without_torch(device)
    if device_type is None:
        return False
    from unlearn_audit.scenarios.cache import FixtureCache
    from unlearn_audit.scenarios.recipes import load_profile_recipes

    cache = FixtureCache(cache_dir)
    recipes = load_profile_recipes(profile)
    for scenario, seed in needed:
        recipe = recipes[scenario]
        if not cache.is_built(recipe, seed):
            return False
        marker = marker_path(cache.path_for(recipe, seed), recipe.check_options, device_type, threads)
        if marker is None or not marker.is_file():
            return False
    return True
