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

import os
import re
import sys
from pathlib import Path

_WORKER = re.compile(r"^gw(\d+)$")


def xdist_worker_index(worker: str | None) -> int | None:
    """0 for `gw0`, 1 for `gw1`, ...; None outside xdist (or for an unrecognised name)."""
    match = _WORKER.match(worker or "")
    return int(match.group(1)) if match else None


DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")
"""The torch device types an audit may run on (ROCm builds call their GPUs `cuda` too)."""


def check_device_name(text: str) -> str:
    """`text` if it names a device of `DEVICE_TYPES` (`cuda`, `cuda:1`, ...), else ValueError saying what would."""
    kind, _, index = text.strip().partition(":")
    if kind not in DEVICE_TYPES or (index and not index.isdigit()) or text.strip().endswith(":"):
        raise ValueError(f"not a device of {DEVICE_TYPES}: {text!r}")
    return text.strip()


def resolve_device(requested: str | None, worker: str | None, cuda_device_count: int) -> str:
    """The device string for this process (see the module docstring for the rules)."""
    name = (requested or ("cuda" if cuda_device_count > 0 else "cpu")).strip()
    if name != "cuda" or cuda_device_count <= 0:
        return name
    index = xdist_worker_index(worker)
    return f"cuda:{(index or 0) % cuda_device_count}"


GPU_LIBRARIES = {"cuda": "libtorch_cuda.so", "hip": "libtorch_hip.so", "xpu": "libtorch_xpu.so"}
"""The shared library each GPU backend of a torch build ships (Linux names)."""
GPU_SIGNS = {
    "cuda": ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/dxg"),
    "hip": ("/dev/kfd", "/dev/dxg"),
    "xpu": ("/dev/dri",),
}
"""Paths that exist on a Linux machine where the backend could find a GPU: the driver's device files
(`/dev/dxg`: WSL 2's), or its kernel module's `/proc` entry (loaded even before the device files are
made on first use)."""
GPU_VENDORS = {"cuda": "0x10de", "hip": "0x1002", "xpu": "0x8086"}
"""PCI vendor ids: NVIDIA, AMD, Intel."""
GPU_PCI_CLASSES = ("0x03", "0x12")
"""PCI base classes of a GPU: display controller (VGA, 3D), processing accelerator."""
PCI_DEVICES = Path("/sys/bus/pci/devices")


def torch_build_gpu_backends() -> frozenset[str] | None:
    """The GPU backends ("cuda", "hip", "xpu") the installed torch was built with, decided from its
    shared libraries without importing it (None when torch is not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None:
        return None
    folders = [Path(folder) / "lib" for folder in spec.submodule_search_locations or []]
    return frozenset(b for b, name in GPU_LIBRARIES.items() if any((lib / name).exists() for lib in folders))


def gpu_hardware_seen(
    backends: frozenset[str],
    signs: dict[str, tuple[str, ...]] = GPU_SIGNS,
    pci_devices: Path = PCI_DEVICES,
) -> bool:
    """Whether this machine shows any sign of a GPU that one of `backends` could drive: a driver's
    device file or `/proc` entry, or a GPU-class PCI device of the backend's vendor.

    Why: the default PyPI torch on Linux is a CUDA build, also on laptops with no NVIDIA GPU; there,
    the build alone would make every audit pay for a GPU it cannot have (a spawned rather than a
    forked worker, torch imported by an xdist controller on a warm cache). True whenever in doubt:
    outside Linux, or where the PCI bus cannot be read.
    """
    if not sys.platform.startswith("linux"):
        return True
    if any(os.path.exists(path) for backend in backends for path in signs.get(backend, ())):
        return True
    vendors = {GPU_VENDORS[b] for b in backends if b in GPU_VENDORS}
    try:
        for device in pci_devices.iterdir():
            vendor = (device / "vendor").read_text().strip().lower()
            if vendor in vendors and (device / "class").read_text().strip().lower().startswith(GPU_PCI_CLASSES):
                return True
    except OSError:
        return True
    return False


def default_device_may_be_gpu() -> bool | None:
    """Whether an audit without `--audit-device` could run on a GPU, told without importing torch:
    False when torch was built without a GPU backend or no GPU for its backends is seen (then torch,
    too, would find none and the audit runs on the CPU); None when torch is not installed."""
    backends = torch_build_gpu_backends()
    if backends is None:
        return None
    return bool(backends) and gpu_hardware_seen(backends)
