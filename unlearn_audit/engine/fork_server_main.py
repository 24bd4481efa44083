"""The fork server: `python -m unlearn_audit.engine.fork_server_main FD [LISTENING_FD]`.

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

Given a second descriptor, a listening AF_UNIX socket (bound in the server's private directory by
the harness that starts it, an xdist controller), the server also serves the other harness processes
of the run, which would otherwise each start a server and import torch once more. Each connection is
answered {"event": "ready"} once the server has imported, and hears the exits of the workers it asked
for; a connection closing ends only that connection.

A request {"kind": "python", "argv": [...], "cwd": ..., "env": {...}, "path": [...]} with stdin,
stdout and stderr comes from `xdist_launcher` and forks an xdist worker: harness code (pytest), run as
`python ARGV` would run it, with the launcher's streams, directory, environment and import path.
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


def _leave_the_server(closing: list[socket.socket], wakeup: tuple[int, int]) -> None:
    """In a forked child: drop the server's signal handling and its sockets."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for sock in closing:
        sock.close()
    for fd in wakeup:
        os.close(fd)


def _become_worker(closing: list[socket.socket], wakeup: tuple[int, int], request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: take the worker's descriptors, directory and environment, run it, never return."""
    code = 1
    try:
        _leave_the_server(closing, wakeup)
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


def _become_python(closing: list[socket.socket], wakeup: tuple[int, int], request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: become `python ARGS` as started by `xdist_launcher` (a pytest-xdist worker:
    harness code, never a method), with the launcher's stdio, directory, environment and import path."""
    code: Any = 1
    try:
        _leave_the_server(closing, wakeup)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[:] = request["path"]
        code = run_python_args(list(request["argv"]))
    except SystemExit as exc:
        code = exc.code
    except BaseException:  # noqa: BLE001 - the child must not return into the server's loop
        import traceback

        traceback.print_exc()
    finally:
        os._exit(_exit_status(code))


def run_python_args(args: list[str]) -> Any:
    """Run `python ARGS` in this (forked) interpreter; only the `-u`, `-B` and `-c CODE` that execnet uses."""
    import atexit
    import threading
    import types

    code = None
    while args:
        arg = args.pop(0)
        if arg == "-B":
            sys.dont_write_bytecode = True
        elif arg == "-c" and args:
            code = args.pop(0)
            break
        elif arg != "-u":  # unbuffered: the streams are flushed at exit either way
            raise SystemExit(f"xdist_launcher: unsupported python argument {arg!r}")
    if code is None:
        raise SystemExit("xdist_launcher: no -c CODE")
    sys.argv = ["-c", *args]
    main = types.ModuleType("__main__")
    sys.modules["__main__"] = main
    status: Any = 0
    try:
        exec(compile(code, "<string>", "exec"), main.__dict__)
    except SystemExit as exc:
        status = exc.code
    # What the interpreter does at exit, less the teardown of its modules (about 0.7 s with torch).
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    return status


def _exit_status(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _reap(asked_by: dict[int, socket.socket]) -> None:
    """Tell each ended worker's harness how it ended (a harness that has gone is not told)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        sock = asked_by.pop(pid, None)
        if sock is not None:
            try:
                _send(sock, {"event": "exited", "pid": pid, "code": os.waitstatus_to_exitcode(status)})
            except OSError:
                pass


def serve(owner: socket.socket, listener: socket.socket | None = None) -> None:
    """Fork a worker per request until the owner (the harness that started the server) hangs up."""
    wakeup = os.pipe()
    for fd in wakeup:
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wakeup[1])
    signal.signal(signal.SIGCHLD, lambda *_: None)  # the wake-up descriptor is what matters
    clients = [owner]
    asked_by: dict[int, socket.socket] = {}
    pythons: dict[socket.socket, int] = {}  # an xdist launcher's connection -> the worker forked for it
    while True:
        listening = [listener] if listener is not None else []
        ready, _, _ = select.select([*clients, *listening, wakeup[0]], [], [])
        if wakeup[0] in ready:
            while True:
                try:
                    if not os.read(wakeup[0], 4096):
                        break
                except BlockingIOError:
                    break
            _reap(asked_by)
        if listener is not None and listener in ready:
            conn, _ = listener.accept()
            try:
                _send(conn, {"event": "ready"})
                clients.append(conn)
            except OSError:
                conn.close()
        for sock in [c for c in clients if c in ready]:
            try:
                data, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 3)
            except OSError:
                data, fds = b"", []
            if not data:
                if sock is owner:
                    return  # the harness that started the server closed its end
                clients.remove(sock)
                pid = pythons.pop(sock, None)
                if pid is not None and asked_by.get(pid) is sock:  # its launcher was killed before it ended
                    os.kill(pid, signal.SIGKILL)
                sock.close()
                continue
            request = json.loads(data)
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            python = request.get("kind") == "python"
            pid = os.fork()
            if pid == 0:
                become = _become_python if python else _become_worker
                become([*clients, *listening], wakeup, request, fds)
            for fd in fds:
                os.close(fd)
            asked_by[pid] = sock
            if python:
                pythons[sock] = pid
            try:
                _send(sock, {"event": "forked", "pid": pid})
            except OSError:
                pass


def main(argv: list[str]) -> None:
    sock = socket.socket(fileno=int(argv[1]))
    listener = socket.socket(fileno=int(argv[2])) if len(argv) > 2 else None  # already listening
    why = _why_unavailable()
    if why is not None:
        _send(sock, {"event": "unavailable", "why": why})
        return
    _preload()
    _send(sock, {"event": "ready"})
    serve(sock, listener)


if __name__ == "__main__":
    try:
        main(sys.argv)
    except (BrokenPipeError, ConnectionResetError):
        pass
    sys.stdout.flush()
    os._exit(0)  # no interpreter teardown: with torch loaded it takes about 0.5 s
