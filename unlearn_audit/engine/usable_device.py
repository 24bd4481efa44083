"""Whether this torch can run on the device an audit asks for, said before anything is collected or built.

Separate from `engine.devices` (pure rules, no torch import): answering needs torch, and the plugin asks
only when `--audit-device` names a device other than the CPU, so that a CPU audit's start-up stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unlearn_audit.errors import UnusableDevice

if TYPE_CHECKING:
    import torch


def check_device_usable(device: torch.device | str) -> None:
    """UnusableDevice, saying why, where this torch cannot run on `device` (before any model is moved there)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UnusableDevice(
                f"--audit-device {device}: this torch ({torch.__version__}) sees no CUDA device"
                + ("" if torch.version.cuda or torch.version.hip else ": it is a CPU build")
            )
        if device.index is not None and device.index >= count:
            raise UnusableDevice(f"--audit-device {device}: this machine has {count} CUDA device(s), 0 to {count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise UnusableDevice(f"--audit-device {device}: MPS is not available here")
    elif device.type == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise UnusableDevice(f"--audit-device {device}: this torch sees no XPU device")
