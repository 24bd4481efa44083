"""Nothing a method starts outlives its job: the worker's descendants are ended, detached or not.

A method can start processes that leave its worker's process group (`setsid`) and its worker's tree
(a double fork: the grandchild is re-parented when its parent exits). Linux re-parents such an orphan
to the nearest ancestor that declared itself a child subreaper (`PR_SET_CHILD_SUBREAPER`), else to
init; the worker declares itself one before it imports the method, so its orphans stay in its tree.
After every job, and before the worker itself is ended, the harness stops and kills every process
below the worker, and every process still in the worker's session or process group (what escaped
the tree when the worker died first). Read from /proc (Linux); elsewhere only the worker's process
group is ended.

What this cannot catch: a method that clears the worker's subreaper flag, double-forks and calls
`setsid` in the grandchild leaves a process that is in neither the worker's tree nor its session. A
process that forks and exits in a loop without pause outruns the look at /proc (red-teamed: hops a few
hundred microseconds apart, the exited ones piling up as the worker's zombies); a second pass over the
children lists did not catch it either. Where Landlock scopes signals, the kernel ends both
(`engine.domain_reaper`: `kill(-1)` from a domain around the worker's); this look remains for the
sandbox off and older kernels.
The harness process is not made a subreaper for its workers' orphans: it has other children (xdist's
workers, a user's own tests') that it could not tell apart from them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process the subreaper of its descendants' orphans; whether it is one now."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    pgid: int
    sid: int


def process_info(pid: int) -> ProcessInfo | None:
    """One process's parent, group and session from /proc/<pid>/stat; None where it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return ProcessInfo(pid, int(fields[1]), int(fields[2]), int(fields[3]))


def process_table() -> dict[int, ProcessInfo]:
    """Every live process (zombies included: they still hold their pid), from /proc/<pid>/stat."""
    found = (process_info(int(entry.name)) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return {info.pid: info for info in found if info is not None}


def descendants(roots: Iterable[int], table: dict[int, ProcessInfo]) -> list[int]:
    """Every process below `roots` (not the roots themselves), parents before children."""
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found: list[int] = []
    queue = list(roots)
    while queue:
        for child in children.get(queue.pop(0), []):
            if child not in found:
                found.append(child)
                queue.append(child)
    return found


def leftovers_of(worker_pid: int, table: dict[int, ProcessInfo]) -> list[int]:
    """The processes a worker's method left: below the worker, or in its session or process group."""
    below = descendants([worker_pid], table)
    kin = [p.pid for p in table.values() if p.pid != worker_pid and worker_pid in (p.sid, p.pgid)]
    return list(dict.fromkeys(below + kin + descendants(kin, table)))


def end_leftovers(worker_pid: int | None, spare: Iterable[int] = ()) -> list[int]:
    """Stop, then kill, what the worker's method left running; the worker itself, and `spare` (its reaper,
    `engine.domain_reaper`), stay. Returns the pids ended (stopped first, so that none can start another
    while the others are killed)."""
    if worker_pid is None or not sys.platform.startswith("linux"):
        return []
    kept = set(spare)
    targets = [pid for pid in leftovers_of(worker_pid, process_table()) if pid not in kept]
    for pid in targets:
        _signal(pid, signal.SIGSTOP)
    late = [
        pid for pid in leftovers_of(worker_pid, process_table()) if pid not in targets and pid not in kept
    ]  # forked meanwhile
    ended = targets + late
    for pid in ended:
        _signal(pid, signal.SIGKILL)
    _wait_until_dead(ended, KILL_GRACE)
    for pid in ended:
        try:
            os.waitpid(pid, os.WNOHANG)  # ours only where the worker was spawned by this process
        except ChildProcessError:
            pass
    return ended


KILL_GRACE = 2.0
"""Seconds to wait for killed processes to be gone: SIGKILL is delivered when the target next runs, which
on a loaded machine can be after the worker exited; the job is over only when they are."""


def _wait_until_dead(pids: list[int], grace: float) -> None:
    """Until every one of `pids` is a zombie or gone (a zombie runs nothing), or `grace` seconds passed."""
    deadline = time.monotonic() + grace
    waiting = list(pids)
    while waiting and time.monotonic() < deadline:
        waiting = [pid for pid in waiting if _running(pid)]
        if waiting:
            time.sleep(0.005)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
