"""The harness's side of an unlearner's worker process (torch-free, so the plugin can check specs).

One `UnlearnerWorker` per `--unlearner` spec: a fresh interpreter that imports the method's
module, so the harness process never does. It is forked from this process's fork server (a
pristine interpreter that imported torch once, see `fork_server`), or, where there is none,
started with `subprocess` (the moral equivalent of multiprocessing's `spawn`, without its pickled
channel). It is reused across the spec's scenarios, seeds and budgets, and restarted after a crash
or a timeout. The worker runs in its own session (process group): a timeout terminates, then
kills, the whole group, including processes the method started.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from unlearn_audit.engine.fork_server import ForkedProcess, launch_fork_server, use_shared_fork_server
from unlearn_audit.engine.worker_protocol import encode

HARNESS_ENV_PREFIX = "UNLEARN_AUDIT_"  # the cache path and the harness's settings stay out of the worker
STARTUP_TIMEOUT = 300.0  # seconds for a worker to import torch and the method's module
LOG_TAIL = 3000
MAX_MESSAGE = 1 << 20  # a control message is a short JSON line; more is a method writing to the pipe


class WorkerStartError(RuntimeError):
    """The spec did not resolve in the worker (a usage error), or the worker died while starting."""


class WorkerFailed(RuntimeError):
    """The worker died or timed out during a job; the message says how (exit status, signal, limit)."""


def describe_exit(returncode: int) -> str:
    """`exited with status 3`, `killed by SIGSEGV`, `killed by SIGKILL: out of memory?`"""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}" + (": out of memory?" if name == "SIGKILL" else "")
    return f"exited with status {returncode}"


def parse_memory(text: str) -> int:
    """Bytes from `4G`, `512M`, `1.5GiB` or a plain number of bytes."""
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1] if t and t[-1] in units else ""
    value = float(t[: len(t) - len(unit)])
    if value <= 0:
        raise ValueError(text)
    return int(value * units[unit])


@dataclass(frozen=True)
class WorkerOptions:
    threads: int | None = None  # torch CPU threads (default 1, as in the harness)
    max_memory: int | None = None  # bytes of address space; applied when the audit runs on the CPU
    device: str | None = None  # the audit device as requested (None: CUDA if available)
    python: str = sys.executable


def worker_sys_path() -> list[str]:
    """The harness's import path, absolute: the worker imports what the harness could import."""
    return [os.path.abspath(p) if p else os.getcwd() for p in sys.path]


def worker_env() -> dict[str, str]:
    """The harness's environment without its own settings (the cache path among them), and its import path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(HARNESS_ENV_PREFIX)}
    env["PYTHONPATH"] = os.pathsep.join(worker_sys_path())
    return env


class UnlearnerWorker:
    def __init__(self, spec: str, options: WorkerOptions = WorkerOptions(), fork_server: bool = True) -> None:
        self.spec = spec
        self.options = options
        self.fork_server = fork_server  # fork from this process's fork server where there is one
        self.process: subprocess.Popen[bytes] | ForkedProcess | None = None
        self.home: Path | None = None
        self._control: int | None = None
        self._buffer = b""
        self._jobs = 0
        self._exit_sent = False
        self.restarts = 0

    # -- life cycle -------------------------------------------------------------------------
    def start(self, hello_extra: dict[str, Any] | None = None) -> None:
        """Start the process and send the hello; `wait_ready` collects the answer."""
        self.home = Path(tempfile.mkdtemp(prefix="unlearn-audit-worker-"))
        read_end, write_end = os.pipe()
        env = worker_env()
        with open(self.home / "worker.log", "wb") as log:
            self.process = self._fork(env, write_end, log.fileno()) if self.fork_server else None
            if self.process is None:
                self.process = subprocess.Popen(
                    [self.options.python, "-m", "unlearn_audit.engine.worker_main", str(write_end)],
                    stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, cwd=self.home, env=env,
                    pass_fds=(write_end,), start_new_session=True,
                )
        os.close(write_end)
        self._control, self._buffer, self._exit_sent = read_end, b"", False
        hello = {"spec": self.spec, "sys_path": worker_sys_path(), "threads": self.options.threads,
                 "max_memory": self.options.max_memory, "device": self.options.device, **(hello_extra or {})}
        self._write(hello)

    def _fork(self, env: dict[str, str], control: int, log: int) -> ForkedProcess | None:
        """The worker as a fork of this process's fork server, or None where there is none (spawn)."""
        server = launch_fork_server(self.options.python, env)
        if server is None:
            return None
        jobs_read, jobs_write = os.pipe()
        try:
            process = server.fork(self.home, env, jobs_read, control, log)  # type: ignore[arg-type]
        finally:
            os.close(jobs_read)
        if process is None:
            os.close(jobs_write)
            return None
        process.stdin = os.fdopen(jobs_write, "wb")
        return process

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Block until the worker resolved its spec; WorkerStartError if it could not."""
        try:
            message = self._read_message(timeout)
        except WorkerFailed as exc:
            raise WorkerStartError(f"--unlearner {self.spec!r}: the worker process {exc} while importing the method"
                                   f"{self._log_tail()}") from None
        if message.get("event") == "spec_error":
            self.close()
            raise WorkerStartError(str(message.get("message")))
        if message.get("event") != "ready":
            self.close()
            raise WorkerStartError(f"--unlearner {self.spec!r}: unexpected message from the worker: {message}")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ensure_started(self) -> None:
        if not self.alive:
            if self.process is not None:
                self.restarts += 1
                self._kill()  # the old process group, children included
                self._discard()
            self.start()
            self.wait_ready()

    def ask_to_exit(self) -> None:
        """Send the exit message once, without waiting (`close` waits)."""
        if self.alive and not self._exit_sent:
            self._exit_sent = True
            try:
                self._write({"exit": True})
            except OSError:
                pass

    def close(self) -> None:
        """Ask the worker to exit; kill it if it does not within a few seconds; remove its directory."""
        if self.alive:
            self.ask_to_exit()
            try:
                self.process.wait(timeout=5)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                pass
        self._kill()
        self._discard()

    # -- jobs -------------------------------------------------------------------------------
    def run(self, job: dict[str, Any], timeout: float) -> None:
        """Run one job to completion; WorkerFailed if the worker died or ran past `timeout` (it is then killed)."""
        self.ensure_started()
        self._jobs += 1
        job = {**job, "job": self._jobs}
        try:
            self._write(job)
        except OSError:
            pass  # it died just now: reading says how
        try:
            message = self._read_message(timeout)
        except WorkerFailed as exc:
            raise WorkerFailed(f"{exc}{self._log_tail()}") from None
        if message.get("event") == "job_error":  # e.g. out of memory in the harness's part of the job
            self._kill()  # its state is suspect: the next job gets a fresh worker
            raise WorkerFailed(f"could not run the job: {message.get('message')}\n{message.get('traceback', '')}")
        if message.get("event") != "done" or message.get("job") != self._jobs:
            self._kill()
            raise WorkerFailed(f"sent an unexpected message {message!r}")

    # -- plumbing ---------------------------------------------------------------------------
    def _write(self, message: dict[str, Any]) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(encode(message))
        self.process.stdin.flush()

    def _read_message(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                raise WorkerFailed(f"did not finish within the time limit of {timeout:.0f} s (--audit-timeout) "
                                   "and was killed")
            ready, _, _ = select.select([self._control], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._control, 1 << 16)  # type: ignore[arg-type]
            if not chunk:  # every write end closed: the worker is gone
                code = self._wait_exit()
                self._kill()  # and whatever it started goes with it
                raise WorkerFailed(describe_exit(code))
            self._buffer += chunk
            if len(self._buffer) > MAX_MESSAGE and b"\n" not in self._buffer:
                self._kill()
                raise WorkerFailed(f"sent more than {MAX_MESSAGE} bytes without a message end and was killed")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self._kill()
            raise WorkerFailed(f"sent a malformed message {line[:200]!r}")
        return message

    def _wait_exit(self) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._kill()
            return self.process.returncode

    def _kill(self) -> None:
        """Terminate, then kill, the worker's whole process group (what the method started dies too)."""
        p = self.process
        if p is None:
            return
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass

    def _log_tail(self) -> str:
        if self.home is None or not (self.home / "worker.log").exists():
            return ""
        text = (self.home / "worker.log").read_text(errors="replace").strip()
        return f"\nworker log (end):\n{text[-LOG_TAIL:]}" if text else ""

    def _discard(self) -> None:
        if self._control is not None:
            os.close(self._control)
            self._control = None
        if self.process is not None and self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None


def start_workers(specs: list[str] | tuple[str, ...], options: WorkerOptions = WorkerOptions(),
                  while_starting: Callable[[], None] | None = None) -> dict[str, UnlearnerWorker]:
    """Start one worker per spec (in parallel) and wait until each resolved its spec.

    `while_starting` runs meanwhile (e.g. the harness's own torch import, which then overlaps the
    workers'). WorkerStartError for the first spec that does not resolve (the others are closed).
    """
    server = launch_fork_server(options.python, worker_env())
    workers = {spec: UnlearnerWorker(spec, options) for spec in specs}
    if server is None:  # spawned workers import in parallel with `while_starting`
        for worker in workers.values():
            worker.start()
    try:
        if while_starting is not None:
            while_starting()  # with a fork server, it imports meanwhile; its forks are then quick
        if server is not None:
            for worker in workers.values():
                worker.start()
        for worker in workers.values():
            worker.wait_ready()
    except WorkerStartError:
        close_all(workers)
        raise
    return workers


def prepare_fork_server(options: WorkerOptions = WorkerOptions(), shared: bool = False,
                        address: str | None = None) -> str | None:
    """Start this process's fork server now (where one is used), so that it imports torch while this
    process does other work; the workers started later are forked from it.

    `shared` (an xdist controller): one that other processes can use; its address is returned.
    `address` (an xdist worker): use the server listening there instead of starting one.
    """
    if address is not None:
        use_shared_fork_server(options.python, address)
        return None
    server = launch_fork_server(options.python, worker_env(), shared=shared)
    return getattr(server, "address", None)


def start_spec_check(specs: list[str] | tuple[str, ...], options: WorkerOptions = WorkerOptions(),
                     fork: bool = False) -> UnlearnerWorker:
    """Start resolving every spec in one short-lived child process (one interpreter start for all of
    them), for runs whose audits happen in other processes (xdist workers) or not at all
    (--collect-only), where per-spec workers would be wasted; `finish_spec_check` collects the answer,
    so that the caller can do its own work (e.g. import torch) meanwhile.

    `fork`: the child is forked from this process's fork server when `finish_spec_check` asks for the
    answer (a fork costs only the method's import once the server has imported, and waiting for the
    server here would hold the caller up); spawned now otherwise."""
    checker = UnlearnerWorker("<spec check>", options, fork_server=fork)
    if not fork:
        checker.start({"check_specs": list(specs)})
    return checker


def finish_spec_check(checker: UnlearnerWorker, specs: list[str] | tuple[str, ...]) -> None:
    """Wait for `start_spec_check`'s child; WorkerStartError for the first spec that does not resolve."""
    if checker.process is None:
        checker.start({"check_specs": list(specs)})
    try:
        message = checker._read_message(STARTUP_TIMEOUT)
    except WorkerFailed as exc:
        raise WorkerStartError(f"checking the --unlearner specs: the process {exc}{checker._log_tail()}") from None
    finally:
        checker.close()
    errors = message.get("errors") if message.get("event") == "specs_checked" else None
    if not isinstance(errors, dict):
        raise WorkerStartError(f"checking the --unlearner specs: unexpected answer {message!r}")
    for spec in specs:
        if spec in errors:
            raise WorkerStartError(str(errors[spec]))


def check_specs_in_child(specs: list[str] | tuple[str, ...], options: WorkerOptions = WorkerOptions()) -> None:
    """Resolve every spec in one short-lived child process; WorkerStartError for the first that does not."""
    finish_spec_check(start_spec_check(specs, options), specs)


def close_all(workers: dict[str, UnlearnerWorker]) -> None:
    """Ask every worker to exit first, then wait for each: they wind down together."""
    for worker in workers.values():
        worker.ask_to_exit()
    for worker in workers.values():
        worker.close()
