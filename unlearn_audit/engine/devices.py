"""Which torch device an audit process uses (pure functions: no torch import, testable anywhere).

Rules (`--audit-device`, the xdist worker, the number of visible GPUs):
- no `--audit-device`: CUDA if a GPU is visible, else CPU;
- `cuda` without an index under pytest-xdist: worker `gwN` takes GPU `N % device_count`, so
  `pytest -n <number of GPUs>` gives every worker its own GPU (more workers than GPUs share them
  round-robin); the controller and non-xdist runs take GPU 0;
- anything explicit (`cpu`, `cuda:1`, `mps`) is used as given, on every worker.
Fixtures are built once (by the controller before the workers start, or by the first worker to
take the cache's file lock) and shared through the cache, whatever device built them.
"""

from __future__ import annotations

import re

_WORKER = re.compile(r"^gw(\d+)$")


def xdist_worker_index(worker: str | None) -> int | None:
    """0 for `gw0`, 1 for `gw1`, ...; None outside xdist (or for an unrecognised name)."""
    match = _WORKER.match(worker or "")
    return int(match.group(1)) if match else None


def resolve_device(requested: str | None, worker: str | None, cuda_device_count: int) -> str:
    """The device string for this process (see the module docstring for the rules)."""
    name = (requested or ("cuda" if cuda_device_count > 0 else "cpu")).strip()
    if name != "cuda" or cuda_device_count <= 0:
        return name
    index = xdist_worker_index(worker)
    return f"cuda:{(index or 0) % cuda_device_count}"


def torch_build_has_gpu_backend() -> bool | None:
    """Whether the installed torch was built with CUDA, ROCm or XPU, decided from its shared libraries
    without importing it (None when torch is not installed)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("torch")
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or []:
        lib = Path(folder) / "lib"
        if any((lib / name).exists() for name in ("libtorch_cuda.so", "libtorch_hip.so", "libtorch_xpu.so")):
            return True
    return False
