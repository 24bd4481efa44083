"""Worker processes forked from a pre-loaded interpreter instead of started from scratch (torch-free).

Why: a worker started as `python -m unlearn_audit.engine.worker_main` spends about 2.5 CPU-s importing
torch and the engine, and another 1.4 CPU-s importing torch._dynamo at the method's first optimizer
(measured on 2 cores). That is paid once per unlearner per harness process (each xdist worker has its
own) and again after every crash or timeout, and it is most of what a small audit costs. A fork
server (`fork_server_main`) pays it once per harness process; each worker is then a fork.

Isolation does not change: the server is a fresh interpreter started like a worker (private
directory, the harness's settings stripped from its environment); it never imports a method nor
receives harness data; each forked worker gets its own session, directory, environment and file
descriptors as a spawned one would, and its exit status is relayed to the harness.

An xdist controller starts one server that listens on a socket in its private directory, and its
xdist workers connect to it (`connect_fork_server`) instead of each starting their own: one torch
import for the whole run instead of one per xdist worker.

Used on Linux with a torch build without a GPU backend (forking after a GPU driver is initialised
is not safe, and the server refuses rather than guess), unless `UNLEARN_AUDIT_FORK_SERVER=0`;
otherwise workers are spawned.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

DISABLE_ENV = "UNLEARN_AUDIT_FORK_SERVER"  # "0": spawn every worker
READY_TIMEOUT = 300.0
UNKNOWN_EXIT = 255  # the server died before it could say how a worker ended


def fork_server_wanted() -> bool:
    """Whether to try a fork server, decided without importing torch (the server checks again)."""
    if os.environ.get(DISABLE_ENV, "1").strip().lower() in ("0", "no", "false", "off"):
        return False
    if not sys.platform.startswith("linux") or not hasattr(socket, "send_fds"):
        return False
    from unlearn_audit.engine.devices import torch_build_has_gpu_backend

    return not torch_build_has_gpu_backend()  # a GPU build: see the module's docstring


def process_ended(pid: int) -> bool:
    """Whether the process `pid`, which is not our child (the server's, once the server has died), has
    ended: its pid is gone, or it is a zombie (an orphan's zombie may stay: not every container's init
    reaps)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


class ForkServerConnection:
    """A harness's connection to a fork server: asks it for workers and hears how they ended."""

    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock
        self.state = "starting"  # then "ready", or "dead" (`why` says why)
        self.why = ""
        self.exits: dict[int, int] = {}
        self._replies: list[dict[str, Any]] = []
        if sock is None:
            self._died()

    # -- messages -----------------------------------------------------------------------------
    def _pump(self, timeout: float | None) -> bool:
        """Read one message if one arrives within `timeout`; False if none did."""
        if self.state == "dead":
            return False
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return False
        try:
            data = self.sock.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self._died()
            return True
        message = json.loads(data)
        if message.get("event") == "exited":
            self.exits[int(message["pid"])] = int(message["code"])
        else:
            self._replies.append(message)
        return True

    def _reply(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while not self._replies and self.state != "dead":
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._pump(remaining):
                break
        return self._replies.pop(0) if self._replies else None

    def _died(self) -> None:
        self.state, self.why = "dead", self.why or "the fork server exited"
        try:
            if self.sock is not None:
                self.sock.close()
        except OSError:
            pass

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> bool:
        """Whether the server is ready to fork (blocks while it imports)."""
        if self.state == "starting":
            message = self._reply(timeout)
            event = (message or {}).get("event")
            if event == "ready":
                self.state = "ready"
            else:  # "unavailable" (a GPU build), or it died while importing
                self.why = str((message or {}).get("why") or self._log_tail() or "no answer")
                self.close()
        return self.state == "ready"

    # -- workers ------------------------------------------------------------------------------
    def fork(self, home: Path, env: dict[str, str], stdin: int, control: int, log: int) -> ForkedProcess | None:
        """A worker process forked with these descriptors, or None if the server cannot (then spawn)."""
        if not self.wait_ready():
            return None
        request = json.dumps({"home": str(home), "env": env}).encode()
        try:
            socket.send_fds(self.sock, [request], [stdin, control, log])
        except OSError:
            self._died()
            return None
        message = self._reply(READY_TIMEOUT)
        if not message or message.get("event") != "forked":
            self._died()
            return None
        return ForkedProcess(int(message["pid"]), self)

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        """The worker's exit code once the server has reaped it; waits up to `timeout` (None: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while pid not in self.exits:
            if self.state == "dead" and process_ended(pid):  # nobody is left to relay its status
                return UNKNOWN_EXIT
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            if self.state == "dead":
                time.sleep(min(0.05, remaining or 0.05))
            else:
                self._pump(remaining)
        return self.exits[pid]

    def _log_tail(self) -> str:
        return ""

    def close(self) -> None:
        """Close the connection (the server forgets it; its workers are not affected)."""
        if self.state != "dead":
            self._died()


def connect_fork_server(address: str) -> ForkServerConnection:
    """A connection to the fork server listening at `address` (another process's, e.g. the xdist
    controller's); a dead one if nobody listens there, so that workers are spawned instead."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(address)
    except OSError as exc:
        sock.close()
        connection = ForkServerConnection(None)
        connection.why = f"cannot connect to the fork server at {address}: {exc}"
        return connection
    return ForkServerConnection(sock)


class ForkServer(ForkServerConnection):
    """A fork server process started by this harness, and this harness's connection to it; with
    `shared`, it also listens at `address` for other harness processes (`connect_fork_server`)."""

    def __init__(self, python: str, env: dict[str, str], shared: bool = False) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.home = Path(tempfile.mkdtemp(prefix="unlearn-audit-fork-server-"))
        self.address: str | None = None
        passed = [theirs]
        if shared:  # listening before the server starts: others may connect at once, and wait for "ready"
            address = str(self.home / "fork-server.sock")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                listener.bind(address)  # fails where $TMPDIR is long: a socket path has at most 107 bytes
                listener.listen(socket.SOMAXCONN)
                self.address = address
                passed.append(listener)
            except OSError:
                listener.close()  # not shared then: each xdist worker starts its own server
        with open(self.home / "server.log", "wb") as log:
            self.process = subprocess.Popen(
                [python, "-m", "unlearn_audit.engine.fork_server_main", *(str(s.fileno()) for s in passed)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.home, env=env,
                pass_fds=[s.fileno() for s in passed], start_new_session=True,
            )
        for sock in passed:
            sock.close()
        super().__init__(ours)

    def _log_tail(self) -> str:
        try:
            return (self.home / "server.log").read_text(errors="replace").strip()[-2000:]
        except OSError:
            return ""

    def close(self) -> None:
        """Close the socket (the server exits on that) and remove the server's directory."""
        super().close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.home, ignore_errors=True)


class ForkedProcess:
    """The part of `subprocess.Popen` that `UnlearnerWorker` uses, for a worker the server forked."""

    def __init__(self, pid: int, server: ForkServerConnection) -> None:
        self.pid = pid
        self.server = server
        self.returncode: int | None = None
        self.stdin: IO[bytes] | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid, timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0)
        return self.returncode


_servers: dict[str, ForkServerConnection] = {}


def launch_fork_server(python: str, env: dict[str, str], shared: bool = False) -> ForkServerConnection | None:
    """This process's fork server for `python`, started now if needed (without waiting for it to
    import: `fork` waits); None where fork servers are not used. `shared`: one that other harness
    processes can connect to (its `address`)."""
    server = _servers.get(python)
    if server is not None and server.state in ("starting", "ready"):
        return server
    if server is not None or not fork_server_wanted():
        return None  # one that failed is not retried: workers are spawned from then on
    _remember(python, ForkServer(python, env, shared=shared))
    return _servers[python]


def use_shared_fork_server(python: str, address: str) -> None:
    """Fork this process's workers for `python` from the server listening at `address` (started by
    another harness process of the same run, see `launch_fork_server(shared=True)`)."""
    if python not in _servers and fork_server_wanted():
        _remember(python, connect_fork_server(address))


def _remember(python: str, server: ForkServerConnection) -> None:
    if not _servers:
        atexit.register(close_fork_servers)
    _servers[python] = server


def close_fork_servers() -> None:
    for server in _servers.values():
        server.close()
