"""Start a pytest-xdist worker as a fork of the run's fork server: `python -m unlearn_audit.engine.xdist_launcher ADDRESS ARGS...`.

Why: an xdist worker is a fresh interpreter that imports pytest, torch and the engine, and torch._dynamo
at its first relearning attack: about 3 CPU-s per worker, paid by every worker of every audit run, on
the critical path of a short run (on 2 cores, a third of what a second worker gains). The xdist
controller's fork server has imported all of that once (see `fork_server`); forked from it, a worker
only imports pytest.

execnet starts an xdist worker as `PYTHON -u -c BOOTSTRAP` with the worker's stdin and stdout as its
pipes; the plugin makes PYTHON this launcher (`popen//python=...`), which hands its own stdin, stdout
and stderr, directory, environment, import path and arguments to the server, and then stands in for
the forked worker: it relays signals to it and exits as it exits. The launcher imports nothing but the
standard library and the torch-free `fork_server`, and starts in milliseconds. Whatever goes wrong before the request is sent (no
server, one that never became ready), the launcher becomes an ordinary worker by exec'ing the
interpreter with ARGS; after it, a missing answer makes it exit with 255 (the server may have forked
the worker already, and a second one must not share its pipes). A launcher that is killed (SIGKILL,
which cannot be relayed) takes its worker with it: the server kills the worker whose launcher hung up.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import time

from unlearn_audit.engine.fork_server import UNKNOWN_EXIT, process_ended

READY_TIMEOUT = 300.0  # the server imports torch before it answers
RELAYED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _receive(sock: socket.socket, timeout: float | None) -> dict | None:
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        return None
    data = sock.recv(1 << 16)
    return json.loads(data) if data else None


def _become_plain_worker(args: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, *args])


def _forked_worker(address: str, args: list[str]) -> tuple[socket.socket, int] | None:
    """Ask the server at `address` to fork the worker; its pid and our connection, or None if the
    server could not be asked (then nothing was forked). Once asked, the server may have forked the
    worker even if its answer never comes: then this process must not become a second worker on the
    same pipes, and it exits instead (execnet sees a worker that did not start, or a working orphan)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(address)
        if (_receive(sock, READY_TIMEOUT) or {}).get("event") != "ready":
            return None
        path = ["", *sys.path[1:]]  # what `python -c` has: the current directory first
        request = {"kind": "python", "argv": args, "cwd": os.getcwd(), "env": dict(os.environ), "path": path}
        socket.send_fds(sock, [json.dumps(request).encode()], [0, 1, 2])
    except (OSError, ValueError):
        return None
    try:
        answer = _receive(sock, READY_TIMEOUT) or {}
    except (OSError, ValueError):
        answer = {}
    if answer.get("event") != "forked":
        print("unlearn-audit xdist launcher: the fork server did not answer", file=sys.stderr)
        _exit_like(UNKNOWN_EXIT)
    return sock, int(answer["pid"])


def _exit_like(code: int) -> None:
    """Exit as the worker did: with its status, or killed by its signal."""
    if code < 0:
        try:
            signal.signal(-code, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL and SIGSTOP have no handler to reset
            pass
        os.kill(os.getpid(), -code)
    os._exit(code if 0 <= code < 256 else 1)


def _relay(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:  # it has just ended: its "exited" message is on its way
        pass


def main(argv: list[str]) -> None:
    address, args = argv[1], argv[2:]
    # A signal that arrives before the worker's pid is known waits (blocked), then is relayed.
    signal.pthread_sigmask(signal.SIG_BLOCK, RELAYED_SIGNALS)
    forked = _forked_worker(address, args)
    if forked is None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, RELAYED_SIGNALS)  # exec keeps the mask
        _become_plain_worker(args)
        return
    sock, pid = forked
    for signum in RELAYED_SIGNALS:
        signal.signal(signum, lambda received, _frame: _relay(pid, received))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, RELAYED_SIGNALS)
    # stdin and stdout belong to the worker now; this process only waits.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    while True:
        try:
            message = _receive(sock, None)
        except InterruptedError:
            continue
        except OSError:
            message = None
        if message is None:  # the server died: nobody will say how the worker ends, so wait it out
            while not process_ended(pid):  # execnet takes this process's exit for the worker's
                time.sleep(0.1)
            _exit_like(UNKNOWN_EXIT)
        if message.get("event") == "exited" and int(message.get("pid", -1)) == pid:
            _exit_like(int(message["code"]))


if __name__ == "__main__":
    main(sys.argv)
