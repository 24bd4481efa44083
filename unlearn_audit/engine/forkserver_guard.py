"""The fork server's children start confined, whoever asked for them.

Why: on the CPU a worker is a fork of the standard library's fork server, and it inherits how to
reach that server: a named UNIX socket, and connecting to one is not something Landlock governs
(up to ABI 7). A method could therefore ask the server for a process of its own, which the server
forks from itself: unconfined, outside the worker's process group, running the method's code.
Red-teaming did exactly that: the new process listed the fixture cache and outlived the audit.

So the server confines each child the moment it is forked (`os.register_at_fork`), before the child
reads what to run, to a baseline that every worker's own plan fits in (`baseline_plan`): read
anything but the files of the harness's private folders, write only beneath the folder of worker homes and in
`/dev/shm`, no signal and no abstract socket out of the sandbox, no TCP unless the audit allows it.
The child also dies with the server (`PR_SET_PDEATHSIG`), so such a process ends with the harness.
A worker then confines itself further, to `sandbox.worker_plan`. A child that cannot be confined
exits at once: no process runs unconfined.

The harness passes the baseline in the server's environment (`BASELINE_ENV`, JSON), only while the
server starts (`worker.py`); this module, among the server's preloads, reads it at import. Imported
anywhere else (a spawned worker, the harness) it does nothing: the variable is absent there, or it
names another parent.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from collections.abc import Iterable

from unlearn_audit.engine.sandbox import SandboxPlan, confine

BASELINE_ENV = "UNLEARN_AUDIT_FORKSERVER_BASELINE"
PR_SET_PDEATHSIG = 1
UNCONFINED_EXIT = 70


def baseline_plan(workers_root: str, deny: Iterable[str], allow_network: bool) -> SandboxPlan:
    """What any child of the fork server may do: a superset of every worker's own plan.

    Any folder may be listed, the denied ones too (not their files read): a worker computes its own plan
    by listing the folders on the way to a denied one, which a second layer of Landlock can only do where
    the first lets it."""
    return SandboxPlan(
        read=("/",),
        write=(workers_root, "/dev/shm"),
        devices=("/dev",),
        deny=tuple(deny),
        allow_network=allow_network,
        list_dirs=("/",),
    )


def baseline_settings(workers_root: str, deny: Iterable[str], allow_network: bool) -> str:
    """The value of `BASELINE_ENV` for a server started by this process."""
    return json.dumps(
        {"parent": os.getpid(), "workers_root": workers_root, "deny": list(deny), "allow_network": allow_network}
    )


def _confine_child(plan: SandboxPlan, server: int) -> None:
    if os.getppid() != server:
        return  # a grandchild: it inherited its parent's confinement
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    why = "the fork server ended" if os.getppid() != server else ""
    if not why:
        status = confine(plan)
        why = "" if status.protections else status.why_not
    if why:
        os.write(2, f"unlearn-audit: a child of the fork server could not be confined ({why})\n".encode())
        os._exit(UNCONFINED_EXIT)


def install_from_environment() -> bool:
    """In the fork server (the harness's child, started with `BASELINE_ENV`): confine every child it
    forks from now on. True if installed."""
    text = os.environ.get(BASELINE_ENV)
    if not text or not sys.platform.startswith("linux"):
        return False
    settings = json.loads(text)
    if settings.get("parent") != os.getppid():
        return False
    del os.environ[BASELINE_ENV]  # not passed on to what the children start
    plan = baseline_plan(settings["workers_root"], settings["deny"], bool(settings["allow_network"]))
    server = os.getpid()
    os.register_at_fork(after_in_child=lambda: _confine_child(plan, server))
    return True


install_from_environment()
