"""Telling without torch that a warm cache needs no preparation (what lets an xdist controller skip it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unlearn_audit.scenarios import prepared
from unlearn_audit.scenarios.prepared import PREPARED_PREFIX, references_ready
from unlearn_audit.scenarios.recipes import load_profile_recipes

NEEDED = [(name, 0) for name in load_profile_recipes("tiny")]
pytestmark = pytest.mark.skipif(prepared.cpu_identity() is None, reason="the CPU can only be told apart on Linux")


def ready(cache: Path, needed: list[tuple[str, int]] = NEEDED, device: str | None = "cpu", threads: int = 1) -> bool:
    return references_ready(str(cache), "tiny", needed, device, threads)


def test_a_prepared_cache_is_ready_and_only_for_its_environment(
    prepared_tiny_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ready(prepared_tiny_cache)
    assert not ready(prepared_tiny_cache, threads=2)  # other threads, other sums
    assert not ready(prepared_tiny_cache, device="cuda")  # GPU kernels: only torch can name them
    assert not ready(prepared_tiny_cache, needed=[*NEEDED, ("gaussian", 1)])  # a seed never built
    assert not references_ready(f"file://{prepared_tiny_cache}", "tiny", NEEDED, "cpu", 1)  # remote: fetched as before
    with monkeypatch.context() as m:  # other kernels
        m.setenv("ATEN_CPU_CAPABILITY", "avx2" if os.environ.get("ATEN_CPU_CAPABILITY") == "default" else "default")
        assert not ready(prepared_tiny_cache)
    monkeypatch.setattr(prepared, "default_device_may_be_gpu", lambda: True)
    assert not ready(prepared_tiny_cache, device=None)  # the default device may be a GPU


def test_a_code_change_or_a_lost_marker_means_not_ready(
    prepared_tiny_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "cache"
    shutil.copytree(prepared_tiny_cache, copy)
    assert ready(copy)
    monkeypatch.setattr(prepared, "code_fingerprint", lambda: "another harness")
    assert not ready(copy)
    monkeypatch.undo()
    next(copy.rglob(f"{PREPARED_PREFIX}*.json")).unlink()
    assert not ready(copy)


def test_an_empty_cache_is_not_ready(tmp_path: Path) -> None:
    assert not ready(tmp_path)


def test_telling_does_not_import_torch(prepared_tiny_cache: Path) -> None:
    code = (
        "import sys; from unlearn_audit.scenarios.prepared import references_ready; "
        f"from unlearn_audit.scenarios.recipes import load_profile_recipes; "
        f"ok = references_ready({str(prepared_tiny_cache)!r}, 'tiny', "
        "[(n, 0) for n in load_profile_recipes('tiny')], 'cpu', 1); "
        "print(ok, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]
