"""Which build of a fixture a result was measured on, and what built it.

Why: the cache is keyed by the recipe and the seed, never by the machine, so that one build can be
shared (a remote cache, a pack) and every audit of it sees the same models. But training follows the
floating-point path of the machine that builds: the same recipe built by another torch version, on
another CPU's kernels (`ATEN_CPU_CAPABILITY`, the BLAS's own dispatch) or on a GPU gives other
weights, and scores measured on other weights differ by more than their standard errors (on `tiny`,
`witches_brew`'s retrain barrier is 0.024 nats built on AVX-512 and 0.041 built on the default
kernels). A result therefore names the build it was measured on: `fixture_id`, a digest of the
checksums the cache entry stores for its weights and data, and `fixture_built_with`, what built it.
The baseline gate uses them not to call a fixture's difference a regression of the method.
"""

from __future__ import annotations

import hashlib
import json
import platform
from typing import Any

ENVIRONMENT_KEY = "build_environment"
"""The key of `meta.json` that records what built the fixture (absent in entries built before it was kept)."""


def build_environment(device: Any) -> dict[str, Any]:
    """What decides the floating-point path of a build on `device` (a torch.device), for `meta.json`."""
    import torch

    environment: dict[str, Any] = {"torch": torch.__version__, "device": device.type, "machine": platform.machine()}
    if device.type == "cpu":
        capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)  # torch >= 2.1
        environment["cpu_capability"] = capability() if capability is not None else "unknown"
        environment["threads"] = torch.get_num_threads()
    elif device.type == "cuda":
        environment["gpu"] = torch.cuda.get_device_name(device)
        environment["cuda"] = torch.version.cuda
        environment["cudnn"] = torch.backends.cudnn.version()
    return environment


def fixture_id(meta: dict[str, Any]) -> str | None:
    """A short digest of the checksums a cache entry records for its files: equal exactly when two entries
    hold the same weights and data (None for metadata without checksums)."""
    checksums = meta.get("sha256")
    if not isinstance(checksums, dict) or not checksums:
        return None
    return hashlib.sha256(json.dumps(checksums, sort_keys=True).encode()).hexdigest()[:16]


def built_with(meta: dict[str, Any]) -> str:
    """What built the entry, in a few words: 'torch 2.13.0+cpu on cpu (x86_64, AVX512, 1 thread)'."""
    environment = meta.get(ENVIRONMENT_KEY)
    if not isinstance(environment, dict):
        versions = meta.get("versions") or {}
        return f"torch {versions.get('torch', '?')} on {meta.get('device', '?')} (kernels not recorded)"
    parts = [str(environment.get("machine", "?"))]
    if environment.get("device") == "cpu":
        threads = environment.get("threads", "?")
        parts += [str(environment.get("cpu_capability", "?")), f"{threads} thread{'' if threads == 1 else 's'}"]
    elif environment.get("device") == "cuda":
        parts += [str(environment.get("gpu", "?")), f"CUDA {environment.get('cuda')}"]
        parts.append(f"cuDNN {environment.get('cudnn')}")
    return f"torch {environment.get('torch', '?')} on {environment.get('device', '?')} ({', '.join(parts)})"
