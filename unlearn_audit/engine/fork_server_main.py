"""The fork server: `python -m unlearn_audit.engine.fork_server_main FD`.

A pristine interpreter, started by `unlearn_audit.engine.fork_server.ForkServer` exactly as a worker
would be (private directory, the harness's settings stripped from its environment), that imports
what every worker imports (torch, torch._dynamo, numpy, safetensors, the worker's harness modules)
and then forks one worker per request. It never imports a method and never receives anything of the
harness but the worker's three file descriptors and its directory and environment.

Messages on the SOCK_SEQPACKET socket FD, one JSON object each:
    server -> harness: {"event": "ready"} or {"event": "unavailable", "why": ...} once, then
                       {"event": "forked", "pid": N} per request and {"event": "exited", "pid": N,
                       "code": C} when a worker ends (C as `subprocess` reports it: -signal if killed).
    harness -> server: {"home": DIR, "env": {...}} with the worker's stdin, control pipe and log as
                       SCM_RIGHTS file descriptors.
The server exits when the harness closes its end.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
from typing import Any

MAX_REQUEST = 1 << 20


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.send(json.dumps(message).encode())


def _why_unavailable() -> str | None:
    """A fork is only safe before a GPU driver is initialised: rather than trust that nothing in the
    imports touches it, the server refuses on builds with a GPU backend (the harness then spawns)."""
    import torch

    if torch.backends.cuda.is_built() or torch.version.hip is not None or torch.backends.mps.is_built():
        return "this torch build has a GPU backend"
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and getattr(xpu, "_is_compiled", lambda: False)():
        return "this torch build has a GPU backend"
    return None


def _preload() -> None:
    """What every worker imports before its method runs, and torch._dynamo, which torch imports at a
    method's first optimizer (`torch.optim` wraps its steps in dynamo's `disable`): 1.4 CPU-s each time."""
    import torch._dynamo  # noqa: F401

    from unlearn_audit.engine.worker_main import import_harness_modules

    import_harness_modules()


def _become_worker(sock: socket.socket, wakeup: tuple[int, int], request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: take the worker's descriptors, directory and environment, run it, never return."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sock.close()
        for fd in wakeup:
            os.close(fd)
        os.setsid()  # its own process group: a timeout kills the method's children too
        stdin, control, log = fds
        os.dup2(stdin, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(stdin)
        os.close(log)
        os.chdir(request["home"])
        os.environ.clear()
        os.environ.update(request["env"])
        from unlearn_audit.engine import worker_main

        code = worker_main.main(["worker_main", str(control)])
        worker_main.exit_now(code)
    except BaseException:  # noqa: BLE001 - whatever happens, the child must not return into the server's loop
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code if isinstance(code, int) else 1)


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(sock, {"event": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status)})


def serve(sock: socket.socket) -> None:
    wakeup = os.pipe()
    for fd in wakeup:
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wakeup[1])
    signal.signal(signal.SIGCHLD, lambda *_: None)  # the wake-up descriptor is what matters
    while True:
        ready, _, _ = select.select([sock, wakeup[0]], [], [])
        if wakeup[0] in ready:
            while True:
                try:
                    if not os.read(wakeup[0], 4096):
                        break
                except BlockingIOError:
                    break
            _reap(sock)
        if sock in ready:
            data, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 3)
            if not data:
                return  # the harness closed its end
            request = json.loads(data)
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            pid = os.fork()
            if pid == 0:
                _become_worker(sock, wakeup, request, fds)
            for fd in fds:
                os.close(fd)
            _send(sock, {"event": "forked", "pid": pid})


def main(argv: list[str]) -> None:
    sock = socket.socket(fileno=int(argv[1]))
    why = _why_unavailable()
    if why is not None:
        _send(sock, {"event": "unavailable", "why": why})
        return
    _preload()
    _send(sock, {"event": "ready"})
    serve(sock)


if __name__ == "__main__":
    try:
        main(sys.argv)
    except (BrokenPipeError, ConnectionResetError):
        pass
    sys.stdout.flush()
    os._exit(0)  # no interpreter teardown: with torch loaded it takes about 0.5 s
