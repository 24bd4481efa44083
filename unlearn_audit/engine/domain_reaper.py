"""A kernel-side end for everything a worker's method started: one `kill(-1)` from inside its Landlock domain.

Why: the harness's look at /proc (`engine.reaper`) ends what stays in the worker's tree, session or process
group, but a process that forks and exits without pause, each hop in a session of its own, is always gone
from where the look found it (red-teamed: a hop every few hundred microseconds outlived the audit). The
kernel can end such a process where a look cannot: `kill(-1, SIGKILL)` signals every process the caller may
signal, under the lock that `fork` takes to add a process, so no hop escapes it; and a Landlock domain that
scopes signals (ABI >= 6) limits "may signal" to the caller's own domain and the domains nested in it.

So the worker, before it confines itself, enters a domain that restricts signals only and forks a small
process into it (`start`): the reaper. The worker then confines itself in a domain nested in that one, and
everything the method starts lies in it or deeper: the reaper can signal all of it, and nothing there can
signal the reaper (nor trace it: Landlock forbids tracing a less confined process). The harness, the fork
server, other workers and the rest of the machine lie outside the reaper's domain, which the reaper checks
before it is of use: a `kill(parent, 0)` must be refused, else it never calls `kill(-1)`.

The reaper waits for one of three things: its worker's exit (a pidfd of the worker), the harness's exit (a
pidfd of the harness: a worker kept alive by the method outlives its harness) or the harness's word
(`SIGUSR1` through a pidfd, `ReaperHandle.end`). Then it ends the domain and exits. (Not `PR_SET_PDEATHSIG`:
the kernel checks a parent-death signal like any other, and Landlock refuses it, the dying worker being
inside the domain and the reaper outside.) Where there is no Landlock ABI 6, the sandbox is off, or the
check fails, there is no reaper and the look at /proc remains the only defence.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import warnings

from unlearn_audit.engine.reaper import process_info

END_SIGNALS = {signal.SIGUSR1, signal.SIGTERM, signal.SIGHUP}
END_GRACE = 2.0
"""Seconds the harness waits for the reaper to have ended the domain and exited."""


def start(outside_pid: int, harness_pid: int | None = None) -> int | None:
    """In the worker, before it confines itself: enter a signal-scoped domain and fork the reaper into it.
    The reaper's pid, or None where a reaper cannot be trusted to reach only this worker's processes
    (no Landlock ABI 6, or the kernel still let it signal `outside_pid`, a process outside the domain).
    The reaper ends the domain when the worker exits or, if given, when `harness_pid` does: red-teamed, a
    method that kept its worker alive (a thread) and cleared the worker's parent-death signal outlived a
    harness that was killed."""
    from unlearn_audit.engine.sandbox import scope_signals

    if not scope_signals():
        return None
    worker = os.getpid()
    verdict_r, verdict_w = os.pipe()
    try:
        with warnings.catch_warnings():  # "fork() in a multi-threaded process": the child runs no other thread
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:  # a process limit: the worker runs on without a reaper, as without Landlock
        os.close(verdict_r)
        os.close(verdict_w)
        return None
    if pid == 0:
        os.close(verdict_r)
        _serve(worker, outside_pid, harness_pid, verdict_w)  # never returns
    os.close(verdict_w)
    with os.fdopen(verdict_r, "rb") as verdict:
        usable = verdict.read(1) == b"1"
    if not usable:
        os.waitpid(pid, 0)
        return None
    return pid


def cannot_signal(outside_pid: int) -> bool:
    """Whether the kernel refuses this process a signal to `outside_pid` (a process of the same user
    outside its domain): the proof that Landlock's signal scope holds, without which `kill(-1)` would
    reach every process of the user. False where it cannot tell (no such process)."""
    try:
        os.kill(outside_pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return False


class _EndNow(Exception):
    """Raised in the reaper by its signal handler: the harness asked it to end the domain."""


def _end_now(signum: int, frame: object) -> None:
    raise _EndNow


def _serve(worker: int, outside_pid: int, harness_pid: int | None, verdict_w: int) -> None:
    """The reaper: check that the domain holds, wait for the end, end the domain, exit. Uses no more of
    the forked interpreter than it must (a fork of a process with torch imported)."""
    status = 0
    try:
        for number in END_SIGNALS:
            signal.signal(number, _end_now)
        os.setsid()  # out of the worker's process group and session: the harness's group kill spares it
        if not cannot_signal(outside_pid):  # kill(-1) would reach too far
            os.write(verdict_w, b"0")
            return
        watched = [os.pidfd_open(worker)]  # readable once the worker exited
        try:
            watched += [os.pidfd_open(harness_pid)] if harness_pid else []  # and once the harness did
        except ProcessLookupError:
            watched = []  # the harness is gone already
        os.write(verdict_w, b"1")
        try:
            kept = sorted(watched)
            for low, high in zip([2, *kept], [*kept, os.sysconf("SC_OPEN_MAX")]):
                os.closerange(low + 1, high)  # no pipe of the worker's stays open through this process
            if watched and os.getppid() == worker:  # else the worker exited before its pidfd was taken
                select.select(watched, [], [])
        except _EndNow:
            pass
        os.kill(-1, signal.SIGKILL)  # every process in this domain and those nested in it; not this one
    except BaseException:  # noqa: BLE001 - nothing may run on in a forked copy of the worker
        status = 1
    finally:
        os._exit(status)


class ReaperHandle:
    """The harness's hold on a worker's reaper: a pidfd, so that a signal can never reach a process that
    took the reaper's pid after it ended."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self._pidfd: int | None = pidfd

    @classmethod
    def adopt(cls, pid: object, worker_pid: int | None) -> ReaperHandle | None:
        """The handle of the reaper the worker named, if it is the worker's child (the worker names it before
        it imports the method, so the name is the harness's code's); None otherwise or without pidfds."""
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1 or worker_pid is None:
            return None
        try:
            pidfd = os.pidfd_open(pid)  # first: the check below is then of the process the pidfd holds
        except (OSError, AttributeError):
            return None
        info = process_info(pid)
        if info is None or info.ppid != worker_pid:
            os.close(pidfd)
            return None
        return cls(pid, pidfd)

    def end(self, grace: float = END_GRACE) -> bool:
        """Tell the reaper to end its domain (it may have, on its worker's death) and wait until it exited;
        killed if it does not within `grace`. Whether it exited by itself. Idempotent."""
        fd, self._pidfd = self._pidfd, None
        if fd is None:
            return True
        try:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGUSR1)
            exited = bool(select.select([fd], [], [], grace)[0])
            if not exited:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)  # the harness's child where it spawned the worker and is init
            return exited
        finally:
            os.close(fd)
