"""A method that signals a process outside its worker fails its case: the attempt is refused and recorded.

Landlock (ABI 6 and later, `engine.sandbox`) makes the kernel refuse such signals, but the kernel does
not tell the harness that a method tried. This guard, installed in the worker before the method's
module is imported, wraps `os.kill` and `os.killpg`: a signal to the worker itself, to its process
group or to one of its descendants goes through; any other is refused with EPERM (as the kernel
would) and recorded, and the job's report turns the record into the case's failure. Where the
guard cannot tell, it lets the kernel decide and records an EPERM. Without signal scoping (Landlock
below ABI 6, or --audit-sandbox off) the guard is the refusal.
A method that signals through ctypes or a child program bypasses the guard (the sandbox still
refuses where the kernel has it).
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable

from unlearn_audit.engine.reaper import descendants, process_table

_attempts: list[str] = []


def _name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _own_family() -> tuple[set[int], set[int]] | None:
    """The worker and its descendants, and their process groups; None where /proc cannot be listed
    (inside the sandbox, or not Linux)."""
    me = os.getpid()
    try:
        table = process_table()
    except OSError:
        return None
    pids = {me, *descendants([me], table)}
    return pids, {os.getpgid(0)} | {table[p].pgid for p in pids if p in table}


def _refuse(what: str) -> None:
    _attempts.append(what)
    raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))


def _send(send: Callable[[int, int], None], target: int, sig: int, outside: bool | None, what: str) -> None:
    """Refuse a signal known to go outside; where that is unknown, let the kernel decide and record its refusal."""
    if outside:
        _refuse(what)
    try:
        send(target, sig)
    except PermissionError as exc:
        if outside is None and exc.errno == errno.EPERM:
            _attempts.append(what)
        raise


def _outside(target: int, group: bool) -> bool | None:
    """Whether a process (or process group) is outside the worker; None where that cannot be told.

    The worker leads a session of its own (`setsid`), so a process in that session is the worker's;
    one in another session is outside unless /proc shows it below the worker (a descendant that
    called `setsid`). Inside the sandbox /proc cannot be listed: another session is then outside.
    """
    try:
        if os.getsid(target) == os.getsid(0):
            return False
    except OSError:  # no such process (the kernel will say so), or not ours to ask about
        return None
    family = _own_family()
    if family is None:
        return True
    return target not in (family[1] if group else family[0])


def _guarded_kill(kill: Callable[[int, int], None]) -> Callable[[int, int], None]:
    def guarded(pid: int, sig: int) -> None:
        if pid == 0 or sig == 0:  # 0: the own group; signal 0 only asks whether a process exists
            kill(pid, sig)
            return
        target = abs(pid) if pid != -1 else 1  # -1: every process the caller may signal; init stands for them
        _send(kill, pid, sig, _outside(target, group=pid < 0), f"{_name(sig)} to pid {pid}")

    return guarded


def _guarded_killpg(killpg: Callable[[int, int], None]) -> Callable[[int, int], None]:
    def guarded(pgid: int, sig: int) -> None:
        if pgid == 0 or sig == 0:
            killpg(pgid, sig)
            return
        _send(killpg, pgid, sig, _outside(pgid, group=True), f"{_name(sig)} to process group {pgid}")

    return guarded


def install() -> None:
    """Wrap `os.kill` and `os.killpg` in this process, before the method's module is imported."""
    os.kill = _guarded_kill(os.kill)
    os.killpg = _guarded_killpg(os.killpg)


def take_attempts() -> list[str]:
    """The refused signals since the last call, e.g. ["SIGKILL to pid 1234"]; the record is cleared."""
    found = list(_attempts)
    _attempts.clear()
    return found
