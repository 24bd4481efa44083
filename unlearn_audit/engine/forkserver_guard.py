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
The baseline reads none of `/proc` but the files torch reads of the process itself: not the list of the
machine's named sockets (`/proc/net/unix`), nor other processes' command lines.

The server forks only for its own harness (`_asked_by_own_harness`). Any process of the same user can
connect to its socket, which lies in a folder that can be listed: a method that got a process from its
own server, confined to that server's baseline, found another audit's server (another session on the
same machine), whose baseline does not deny this audit's cache, and read the retrain model through it.
A request carries the write end of the pipe by which the server sees its harness alive; only the harness
and the processes the server forked for it hold that pipe, so a child whose request carried another
pipe exits before it runs anything. (The standard library's fork server authenticates its clients
itself from Python 3.14 on; before, it forks for anyone.)
A worker then confines itself further, to `sandbox.worker_plan`. A child that cannot be confined
exits at once: no process runs unconfined.

The baseline is the one of the worker the harness starts next: the harness writes it to a policy file
(`write_policy`, atomically) in a folder of its own, which no child of the server may write, before it
asks the server for a worker; the child reads it the moment it is forked. So one server serves workers
of any confinement (another cache, the sandbox off: within one process only the harness's own tests
vary it), and a process a method asks for gets the confinement of the method's own audit. The server
learns the file's path from its environment (`POLICY_ENV`, only while it starts); this module, among the
server's preloads, reads it at import. Imported anywhere else (a spawned worker, the harness) it does
nothing: the variable is absent there, or names another parent.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import stat
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from unlearn_audit.engine.sandbox import SYSTEM_READ, UNIX_SOCKET_LISTS, SandboxPlan, confine

POLICY_ENV = "UNLEARN_AUDIT_FORKSERVER_POLICY"
PR_SET_PDEATHSIG = 1
UNCONFINED_EXIT = 70
REFUSED_EXIT = 71  # a child forked for a client that is not the server's harness


def baseline_plan(workers_root: str, deny: Iterable[str], allow_network: bool) -> SandboxPlan:
    """What any child of the fork server may do: a superset of every worker's own plan.

    Any folder may be listed, the denied ones too (not their files read): a worker computes its own plan
    by listing the folders on the way to a denied one, which a second layer of Landlock can only do where
    the first lets it. Of `/proc`, only what a worker's plan reads (`sandbox.SYSTEM_READ`): the rest tells
    the paths of named sockets and other processes' command lines, the harness's among them."""
    return SandboxPlan(
        read=("/", *(path for path in SYSTEM_READ if path.startswith("/proc/"))),
        write=(workers_root, "/dev/shm"),
        devices=("/dev",),
        deny=(*deny, *UNIX_SOCKET_LISTS),
        carve=("/proc",),
        allow_network=allow_network,
        list_dirs=("/",),
    )


def write_policy(path: Path, workers_root: str, deny: Iterable[str] | None, allow_network: bool) -> None:
    """The confinement of the server's next children (`deny` None: none, the sandbox is off), replacing the
    file whole, so that a child never reads half of it."""
    policy = (
        None if deny is None else {"workers_root": workers_root, "deny": list(deny), "allow_network": allow_network}
    )
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(json.dumps({"confine": policy}))
    os.replace(part, path)


def policy_environment(path: Path) -> str:
    """The value of `POLICY_ENV` for a server started by this process."""
    return json.dumps({"parent": os.getpid(), "policy": str(path)})


def _read_own_policy(policy_file: str) -> dict[str, Any] | None:
    """The policy's `confine` entry, from a regular file of this user (not followed through a link): a file
    anyone else made, were the folder removed and its name taken, is refused, not obeyed."""
    fd = os.open(policy_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not block the child
    with os.fdopen(fd) as file:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise ValueError("it is not a regular file")
        if status.st_uid != os.geteuid():
            raise ValueError("it belongs to another user")
        policy = json.loads(file.read())["confine"]
    return policy if policy is None else dict(policy)


def _open_pipes(access: int) -> dict[int, int]:
    """This process's descriptors above stdio that are pipes open for `access` (O_RDONLY or O_WRONLY):
    descriptor -> the pipe's inode (both ends of a pipe share it)."""
    import fcntl  # POSIX: imported where a fork server runs, not where this module is only imported

    found = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2:
            continue
        try:
            status = os.fstat(fd)
            if stat.S_ISFIFO(status.st_mode) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == access:
                found[fd] = status.st_ino
        except OSError:  # the descriptor listdir itself used, closed since
            continue
    return found


def alive_pipe_of_server() -> int | None:
    """In the fork server, while it imports its preloads: the inode of the pipe by which it sees its harness
    alive, the one pipe it was started with (the harness keeps the write end and sends it with every
    request). None where that is not so (then the server cannot tell its harness's requests apart)."""
    readers = set(_open_pipes(os.O_RDONLY).values())
    if len(readers) != 1 or readers & set(_open_pipes(os.O_WRONLY).values()):
        return None
    return readers.pop()


_alive_pipe: int | None = None
"""In the server, and in each process it forks: the inode of the server's alive pipe (None: unknown)."""


def drop_alive_pipe() -> None:
    """In a worker the server forked: close the server's alive pipe, which the request sent it, before the
    method runs. The worker never asks the server for a process; without the pipe the method cannot either.
    With it, a method got a process forked from the server, confined only to the server's baseline and
    outside the worker's own domain, so that the worker's reaper (`engine.domain_reaper`) could not end it.
    A method that starts processes through a fork server of its own still can: multiprocessing starts a
    new server for a process that did not start the one it came from."""
    if _alive_pipe is None:
        return
    for fd, inode in _open_pipes(os.O_WRONLY).items():
        if inode == _alive_pipe:
            os.close(fd)


def _asked_by_own_harness(alive_pipe: int | None) -> bool:
    """In a child just forked: whether the request it was forked for carried the write end of the server's
    alive pipe (the server itself holds none, so the child holds one only if the request sent it)."""
    return alive_pipe is None or alive_pipe in _open_pipes(os.O_WRONLY).values()


def _confine_child(policy_file: str, server: int, alive_pipe: int | None = None) -> None:
    if os.getppid() != server:
        return  # a grandchild: it inherited its parent's confinement
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    why = "the fork server ended" if os.getppid() != server else ""
    if not why and not _asked_by_own_harness(alive_pipe):
        os.write(2, b"unlearn-audit: the fork server refused a process to a client that is not its harness\n")
        os._exit(REFUSED_EXIT)
    if not why:
        try:
            policy = _read_own_policy(policy_file)
        except (OSError, ValueError, KeyError) as exc:
            policy, why = None, f"its policy {policy_file} is unreadable: {exc}"
        if policy is not None:
            status = confine(baseline_plan(policy["workers_root"], policy["deny"], bool(policy["allow_network"])))
            why = "" if status.protections else status.why_not
    if why:
        os.write(2, f"unlearn-audit: a child of the fork server could not be confined ({why})\n".encode())
        os._exit(UNCONFINED_EXIT)


def install_from_environment() -> bool:
    """In the fork server (the harness's child, started with `POLICY_ENV`): confine every child it forks
    from now on, as its policy file says at that moment. True if installed."""
    text = os.environ.get(POLICY_ENV)
    if not text or not sys.platform.startswith("linux"):
        return False
    settings = json.loads(text)
    if settings.get("parent") != os.getppid():
        return False
    del os.environ[POLICY_ENV]  # not passed on to what the children start
    global _alive_pipe
    policy_file, server, alive_pipe = str(settings["policy"]), os.getpid(), alive_pipe_of_server()
    _alive_pipe = alive_pipe
    os.register_at_fork(after_in_child=lambda: _confine_child(policy_file, server, alive_pipe))
    return True


install_from_environment()
