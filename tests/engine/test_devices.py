"""Device resolution: one GPU per xdist worker; whether the default device may be a GPU, told without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from unlearn_audit.engine import devices
from unlearn_audit.engine.devices import (
    GPU_SIGNS,
    default_device_may_be_gpu,
    gpu_hardware_seen,
    resolve_device,
    xdist_worker_index,
)


@pytest.mark.parametrize(
    ("requested", "worker", "gpus", "expected"),
    [
        (None, None, 0, "cpu"),
        (None, None, 2, "cuda:0"),
        (None, "gw0", 4, "cuda:0"),
        (None, "gw3", 4, "cuda:3"),
        ("cuda", "gw5", 4, "cuda:1"),  # more workers than GPUs: round-robin
        ("cuda:2", "gw0", 4, "cuda:2"),  # explicit index: as given
        ("cpu", "gw1", 4, "cpu"),
        ("cuda", None, 0, "cuda"),  # no GPU visible: left to torch to report
    ],
)
def test_one_gpu_per_xdist_worker(requested: str | None, worker: str | None, gpus: int, expected: str) -> None:
    assert resolve_device(requested, worker, gpus) == expected


def test_xdist_worker_index() -> None:
    assert (
        xdist_worker_index("gw12") == 12 and xdist_worker_index("master") is None and xdist_worker_index(None) is None
    )


def pci_device(root: Path, name: str, vendor: str, pci_class: str) -> None:
    device = root / name
    device.mkdir(parents=True)
    (device / "vendor").write_text(vendor + "\n")
    (device / "class").write_text(pci_class + "\n")


@pytest.fixture
def bare_machine(tmp_path: Path) -> tuple[dict[str, tuple[str, ...]], Path]:
    """No driver files (they point into tmp_path, where none exist) and a PCI bus with a network card,
    a bridge and Intel's integrated graphics."""
    signs = {
        backend: tuple(str(tmp_path / "dev" / Path(p).name) for p in paths) for backend, paths in GPU_SIGNS.items()
    }
    pci = tmp_path / "pci"
    pci_device(pci, "0000:00:00.0", "0x8086", "0x060000")
    pci_device(pci, "0000:00:02.0", "0x8086", "0x030000")
    pci_device(pci, "0000:00:03.0", "0x1af4", "0x020000")
    return signs, pci


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="device files and the PCI bus are read on Linux only")
def test_gpu_hardware_is_told_from_driver_files_or_the_pci_bus(bare_machine: tuple[dict, Path]) -> None:
    signs, pci = bare_machine
    cuda, hip = frozenset({"cuda"}), frozenset({"hip"})
    assert not gpu_hardware_seen(cuda, signs, pci)  # a laptop with Intel graphics and a CUDA build of torch
    assert not gpu_hardware_seen(frozenset(), signs, pci)
    assert gpu_hardware_seen(frozenset({"xpu"}), signs, pci)  # Intel graphics is what an XPU build drives
    Path(signs["cuda"][2]).parent.mkdir()
    Path(signs["cuda"][2]).mkdir()  # the kernel module's /proc entry, before any device file is made
    assert gpu_hardware_seen(cuda, signs, pci) and not gpu_hardware_seen(hip, signs, pci)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="device files and the PCI bus are read on Linux only")
@pytest.mark.parametrize(
    ("vendor", "pci_class", "backend", "seen"),
    [
        ("0x10de", "0x030200", "cuda", True),  # an NVIDIA 3D controller (a data-centre GPU)
        ("0x10de", "0x030000", "cuda", True),  # an NVIDIA VGA controller
        ("0x10de", "0x040300", "cuda", False),  # an NVIDIA card's audio function
        ("0x1002", "0x120000", "hip", True),  # an AMD processing accelerator
        ("0x1002", "0x030000", "cuda", False),  # an AMD GPU, but a CUDA build
    ],
)
def test_a_gpu_on_the_pci_bus_counts_for_its_vendors_backend(
    bare_machine: tuple[dict, Path], vendor: str, pci_class: str, backend: str, seen: bool
) -> None:
    signs, pci = bare_machine
    pci_device(pci, "0000:41:00.0", vendor, pci_class)
    assert gpu_hardware_seen(frozenset({backend}), signs, pci) is seen


def test_in_doubt_a_gpu_is_assumed(bare_machine: tuple[dict, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    signs, pci = bare_machine
    assert gpu_hardware_seen(frozenset({"cuda"}), signs, pci / "missing")  # an unreadable bus
    monkeypatch.setattr(sys, "platform", "darwin")
    assert gpu_hardware_seen(frozenset({"cuda"}), signs, pci)  # nothing to read outside Linux


def test_the_default_device_may_be_a_gpu_only_with_a_backend_and_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "gpu_hardware_seen", lambda backends: True)
    monkeypatch.setattr(devices, "torch_build_gpu_backends", lambda: frozenset({"cuda"}))
    assert default_device_may_be_gpu() is True
    monkeypatch.setattr(devices, "torch_build_gpu_backends", lambda: frozenset())
    assert default_device_may_be_gpu() is False  # a CPU build
    monkeypatch.setattr(devices, "torch_build_gpu_backends", lambda: None)
    assert default_device_may_be_gpu() is None  # no torch
    monkeypatch.setattr(devices, "torch_build_gpu_backends", lambda: frozenset({"cuda"}))
    monkeypatch.setattr(devices, "gpu_hardware_seen", lambda backends: False)
    assert default_device_may_be_gpu() is False  # a CUDA build on a machine without a GPU


def test_the_installed_torch_builds_backends_are_read_without_importing_it() -> None:
    code = (
        "import sys; from unlearn_audit.engine.devices import torch_build_gpu_backends; "
        "b = torch_build_gpu_backends(); assert b is not None and b <= {'cuda', 'hip', 'xpu'}, b; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
