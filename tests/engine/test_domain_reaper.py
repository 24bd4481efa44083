"""The reaper's safety check and the harness's hold on it (`engine.domain_reaper`). Its work, ending a
method's processes that a look at /proc cannot catch, is tested with a hopper in `test_worker.py`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from unlearn_audit.engine.domain_reaper import ReaperHandle, cannot_signal
from unlearn_audit.engine.sandbox import landlock_abi

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pidfds and Landlock are Linux's")


def test_the_check_fails_where_nothing_scopes_signals() -> None:
    """Unconfined, this process may signal its parent: the reaper would then never call kill(-1)."""
    assert not cannot_signal(os.getppid())
    assert not cannot_signal(2**22 + 7)  # no such process: cannot tell, so no


@pytest.mark.skipif(landlock_abi() < 6, reason="Landlock scopes signals from ABI 6")
def test_the_check_holds_inside_a_signal_scoped_domain() -> None:
    """In a child that entered a signal-scoped domain, its parent (this process) is out of reach."""
    code = textwrap.dedent(
        """
        import os, sys
        from unlearn_audit.engine.domain_reaper import cannot_signal
        from unlearn_audit.engine.sandbox import scope_signals
        assert scope_signals()
        sys.exit(0 if cannot_signal(os.getppid()) else 3)
        """
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_the_harness_adopts_only_a_child_of_the_worker() -> None:
    """The worker names its reaper in its first message; the harness holds it by a pidfd only if it is the
    worker's child (a pid of anything else is refused), and ending it ends that process."""
    child = subprocess.Popen(["sleep", "60"])
    try:
        assert ReaperHandle.adopt(child.pid, worker_pid=os.getppid()) is None  # not the named worker's child
        assert ReaperHandle.adopt(True, worker_pid=os.getpid()) is None
        assert ReaperHandle.adopt("1", worker_pid=os.getpid()) is None
        assert ReaperHandle.adopt(child.pid, worker_pid=None) is None
        handle = ReaperHandle.adopt(child.pid, worker_pid=os.getpid())
        assert handle is not None
        assert handle.end(grace=10) is True  # SIGUSR1 ends a sleep
        assert not Path(f"/proc/{child.pid}").exists(), "ended and, being this process's child, reaped"
        assert handle.end() is True  # idempotent
    finally:
        child.kill()
        child.wait()
