"""The harness's side of an unlearner's worker process (torch-free, so the plugin can check specs).

One `UnlearnerWorker` per `--unlearner` spec: a process of its own that imports the method's
module, so the harness process never does. It is started through the standard library's
`multiprocessing`: from the `forkserver` context, whose server imports torch and the worker's
harness modules once (`WORKER_PRELOAD`) so that each worker is a fork of a pristine interpreter,
or from `spawn` where forking is not safe or not available (see `start_method`). Only the process
and two pipes come from multiprocessing: jobs go in and answers come out as JSON lines, and the
results as files, so the harness never unpickles anything the worker produced.

Each job (one `unlearn()`) runs in a fresh worker process: the spec's next process is started as soon
as a job ends (`renew`), while the harness evaluates, so that nothing a method keeps in memory (a module
global, a cache) reaches its next job. Red-teamed: a method that kept training one model across its
jobs, each within its own budget, passed checks that the same method starting afresh failed. What
compilers build (`torch.compile`'s caches) is kept for the spec's later processes, in a folder of its
own. A worker runs in its own session (process group): a timeout terminates, then kills, the whole
group, including processes the method started.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import multiprocessing
import os
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from unlearn_audit.engine.domain_reaper import ReaperHandle
from unlearn_audit.engine.forkserver_guard import POLICY_ENV, policy_environment, write_policy
from unlearn_audit.engine.options import WorkerOptions
from unlearn_audit.engine.reaper import end_leftovers
from unlearn_audit.engine.sandbox import landlock_abi
from unlearn_audit.engine.untrusted_files import read_result_tail
from unlearn_audit.engine.worker_protocol import WORKER_PRELOAD, encode

HARNESS_ENV_PREFIX = "UNLEARN_AUDIT_"  # the cache path and the harness's settings stay out of the worker
START_METHOD_ENV = "UNLEARN_AUDIT_START_METHOD"  # "forkserver" or "spawn": overrides `start_method`
START_METHODS = ("forkserver", "spawn")
STARTUP_TIMEOUT = 300.0  # seconds for a worker to import torch and the method's module
LOG_TAIL = 3000
MAX_MESSAGE = 1 << 20  # a control message is a short JSON line; more is a method writing to the pipe
LOG_FILE = "worker.log"


class WorkerStartError(RuntimeError):
    """The spec did not resolve in the worker (a usage error), or the worker died while starting."""


class WorkerFailed(RuntimeError):
    """The worker died or timed out during a job; the message says how (exit status, signal, limit)."""


def describe_exit(returncode: int | None) -> str:
    """`exited with status 3`, `killed by SIGSEGV`, `killed by SIGKILL: out of memory?`"""
    if returncode is None:
        return "ended in an unknown way"
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


def start_method(device: str | None) -> str:
    """`forkserver` where forking a pre-loaded interpreter is safe, else `spawn`.

    CUDA must not be used in a process forked after its driver was initialised. The forkserver never
    touches the GPU, but whether torch's import leaves the driver alone is a property of the build
    that this harness does not test on every GPU stack; so a CUDA audit (asked for, or the default on
    a torch build with a GPU backend where the machine shows a GPU: `devices.default_device_may_be_gpu`)
    spawns, as PyTorch recommends. `UNLEARN_AUDIT_START_METHOD`
    overrides the choice (e.g. `forkserver` with `--audit-device cpu` on a CUDA build is the default
    anyway; `spawn` to rule the forkserver out while debugging).
    """
    chosen = os.environ.get(START_METHOD_ENV, "").strip().lower()
    if chosen:
        if chosen not in START_METHODS:
            raise ValueError(f"{START_METHOD_ENV}={chosen!r}: expected one of {', '.join(START_METHODS)}")
        return chosen
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    requested = (device or "").strip().lower()
    if requested.startswith("cuda"):
        return "spawn"
    if not requested:
        from unlearn_audit.engine.devices import default_device_may_be_gpu

        if default_device_may_be_gpu():
            return "spawn"
    return "forkserver"


def worker_context(method: str) -> BaseContext:
    """The multiprocessing context of `method`, its forkserver told what to pre-load."""
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(list(WORKER_PRELOAD))  # type: ignore[attr-defined]
    return context


def worker_sys_path() -> list[str]:
    """The harness's import path, absolute: the worker imports what the harness could import."""
    return [os.path.abspath(p) if p else os.getcwd() for p in sys.path]


def worker_env() -> dict[str, str]:
    """The harness's environment without its own settings (the cache path among them), and its import path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(HARNESS_ENV_PREFIX)}
    env["PYTHONPATH"] = os.pathsep.join(worker_sys_path())
    return env


_environ_lock = threading.Lock()


@contextlib.contextmanager
def harness_settings_hidden() -> Iterator[None]:
    """Start processes without the harness's `UNLEARN_AUDIT_*` variables in their initial environment.

    A process's initial environment stays readable in `/proc/<pid>/environ` whatever it later does to
    `os.environ`; multiprocessing starts the forkserver (whose forks inherit its environment) and
    spawned workers with this process's environment, so the settings are out of it while they start.
    """
    with _environ_lock:
        hidden = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(HARNESS_ENV_PREFIX)}
        try:
            yield
        finally:
            os.environ.update(hidden)


_workers_root: str | None = None
_policy_file: Path | None = None


def workers_root() -> str:
    """The folder of this process's worker homes, made once: the only folder beneath which a child of the
    fork server may write (`engine.forkserver_guard`)."""
    global _workers_root
    if _workers_root is None or not os.path.isdir(_workers_root):
        _workers_root = tempfile.mkdtemp(prefix="unlearn-audit-workers-")
        atexit.register(shutil.rmtree, _workers_root, ignore_errors=True)
    return _workers_root


def forkserver_policy(options: WorkerOptions) -> Path:
    """The fork server's policy file, now saying how to confine the worker of `options` (not at all where the
    sandbox is off or the kernel has no Landlock); in a folder of this process that no worker may write."""
    global _policy_file
    if _policy_file is None:
        folder = tempfile.mkdtemp(prefix="unlearn-audit-forkserver-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _policy_file = Path(folder) / "policy.json"
    # A running server learnt this path when it started: a removed folder is made again in the same place.
    _policy_file.parent.mkdir(mode=0o700, exist_ok=True)
    confined = options.sandbox and landlock_abi() > 0
    write_policy(_policy_file, workers_root(), options.deny if confined else None, options.allow_network)
    return _policy_file


class UnlearnerWorker:
    def __init__(self, spec: str, options: WorkerOptions = WorkerOptions()) -> None:
        self.spec = spec
        self.options = options
        self.process: BaseProcess | None = None
        self.home: Path | None = None
        self._jobs_out: Connection | None = None
        self._control: Connection | None = None
        self._buffer = b""
        self._jobs = 0
        self._exit_sent = False
        self.restarts = 0
        self.sandbox: str | None = None  # what confined the worker, as it said when ready (`engine.sandbox`)
        self.caches: Path | None = None  # the compilers' caches, kept for the spec's later processes
        self._ready = False
        self._reaper: ReaperHandle | None = None  # ends what the method started (`engine.domain_reaper`)

    # -- life cycle -------------------------------------------------------------------------
    def start(self, hello_extra: dict[str, Any] | None = None) -> None:
        """Start the process and send the hello; `wait_ready` collects the answer."""
        from unlearn_audit.engine.worker_main import serve

        method = start_method(self.options.device)
        self.home = Path(tempfile.mkdtemp(prefix="unlearn-audit-worker-", dir=workers_root()))
        if self.caches is None:
            self.caches = Path(tempfile.mkdtemp(prefix="unlearn-audit-caches-", dir=workers_root()))
        self._ready = False
        self._reaper = None
        context = worker_context(method)
        jobs_in, jobs_out = context.Pipe(duplex=False)
        control_in, control_out = context.Pipe(duplex=False)
        o = self.options
        hello = {
            "spec": self.spec,
            "sys_path": worker_sys_path(),
            "threads": o.threads,
            "max_memory": o.max_memory,
            "device": o.device,
            "sandbox": {"deny": list(o.deny), "allow_network": o.allow_network} if o.sandbox else None,
            "caches": str(self.caches),
            "harness_pid": os.getpid(),  # the reaper ends the worker's domain when this process ends
            **(hello_extra or {}),
        }
        process = context.Process(  # type: ignore[attr-defined]
            target=serve,
            args=(hello, jobs_in, control_out, str(self.home), worker_env()),
            name=f"unlearn-audit worker {self.spec}",
        )
        with harness_settings_hidden():
            if method == "forkserver":  # the policy its child reads; the file's path, if this start starts it
                os.environ[POLICY_ENV] = policy_environment(forkserver_policy(self.options))
            try:
                process.start()
            finally:
                os.environ.pop(POLICY_ENV, None)
        jobs_in.close()  # the worker's ends: it holds its own copies now
        control_out.close()
        self.process, self._jobs_out, self._control = process, jobs_out, control_in
        self._buffer, self._exit_sent = b"", False

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Block until the worker resolved its spec; WorkerStartError if it could not."""
        try:
            message = self._read_answer(timeout)
        except WorkerFailed as exc:
            raise WorkerStartError(
                f"--unlearner {self.spec!r}: the worker process {exc} while importing the method{self._log_tail()}"
            ) from None
        if message.get("event") == "spec_error":
            self.close()
            raise WorkerStartError(str(message.get("message")))
        if message.get("event") != "ready":
            self.close()
            raise WorkerStartError(f"--unlearner {self.spec!r}: unexpected message from the worker: {message}")
        self.sandbox = str(message.get("sandbox") or "none: the worker did not say")
        self._ready = True

    @property
    def alive(self) -> bool:
        """Whether the worker process is running."""
        return self.process is not None and self.process.is_alive()

    def ensure_started(self) -> None:
        """Start the worker if it is not running, and wait until it is ready; a replacement for a dead one ends
        the old one's group first."""
        if not self.alive:
            if self.process is not None:
                self.restarts += 1
                self._kill()  # the old process group, children included
                self._discard()
            self.start()
            self.wait_ready()
        elif not self._ready:  # started by `renew`
            self.wait_ready()

    def renew(self) -> None:
        """End this process, and start the spec's next one now, without waiting for it: its start-up (the
        method's import; under `spawn`, torch's too) overlaps what the harness does before the next job."""
        self._end_process()
        self.start()

    def ask_to_exit(self) -> None:
        """Send the exit message once, without waiting (`close` waits). What the method left running is
        ended first, while the worker lives: once it exits, its detached orphans would go to init."""
        if self.alive and not self._exit_sent:
            self.end_leftovers()
            self._exit_sent = True
            try:
                self._write({"exit": True})
            except OSError:
                pass

    def close(self) -> None:
        """Ask the worker to exit; kill it if it does not within a few seconds; remove its directories."""
        self._end_process()
        if self.caches is not None:
            shutil.rmtree(self.caches, ignore_errors=True)
            self.caches = None

    def _end_process(self) -> None:
        if self.alive and self._ready:  # one still starting reads no message: it is killed at once
            self.ask_to_exit()
            self.process.join(timeout=5)  # type: ignore[union-attr]
        self._kill()
        self._discard()
        self._ready = False

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
        finally:
            self.end_leftovers()
        if message.get("event") == "job_error":  # e.g. out of memory in the harness's part of the job
            self._kill()  # its state is suspect: the next job gets a fresh worker
            raise WorkerFailed(f"could not run the job: {message.get('message')}\n{message.get('traceback', '')}")
        if message.get("event") != "done" or message.get("job") != self._jobs:
            self._kill()
            raise WorkerFailed(f"sent an unexpected message {message!r}")

    def end_leftovers(self) -> list[int]:
        """End every process the method started that is still running (`engine.reaper`), however it
        detached; the worker itself, and its reaper, stay."""
        spare = (self._reaper.pid,) if self._reaper is not None else ()
        return end_leftovers(self.process.pid if self.process is not None else None, spare)

    def _read_answer(self, timeout: float) -> dict[str, Any]:
        """The worker's answer to its hello, after the message that names its reaper (sent before the
        method's module was imported: the first message is always the worker's own)."""
        message = self._read_message(timeout)
        if message.get("event") != "confined":
            self._kill()
            raise WorkerFailed(f"sent {message!r} before it said how it was confined")
        self._reaper = ReaperHandle.adopt(message.get("reaper"), self.process.pid if self.process else None)
        return self._read_message(timeout)

    def _end_domain(self) -> None:
        """Have the reaper end the worker and everything it started, at once (the kernel's `kill(-1)` within
        the worker's domain): what the look at /proc cannot catch, a process that forks and exits without
        pause, ends too."""
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.end()

    # -- plumbing ---------------------------------------------------------------------------
    def _write(self, message: dict[str, Any]) -> None:
        assert self._jobs_out is not None
        self._jobs_out.send_bytes(encode(message))

    def _read_message(self, timeout: float) -> dict[str, Any]:
        """The worker's next JSON line, read with a deadline from the raw pipe (never unpickled).

        The pipe is read byte-wise with `select`, not with `Connection.recv`, so that a method that
        writes garbage or half a message to it cannot block the harness past the deadline.
        """
        assert self._control is not None and self.process is not None
        control = self._control.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                raise WorkerFailed(
                    f"did not finish within the time limit of {timeout:.0f} s (--audit-timeout) and was killed"
                )
            ready, _, _ = select.select([control, self.process.sentinel], [], [], remaining)
            if control in ready:
                chunk = os.read(control, 1 << 16)
            elif ready:  # the worker ended; what it wrote before is read first
                chunk = b""
            else:
                continue
            if not chunk:  # the worker is gone (or closed the pipe)
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

    def _wait_exit(self) -> int | None:
        assert self.process is not None
        self.process.join(timeout=10)
        if self.process.exitcode is None:
            self._kill()
        return self.process.exitcode

    def _kill(self) -> None:
        """Terminate, then kill, the worker's whole process group (what the method started dies too)."""
        p = self.process
        if p is None or p.pid is None:
            return
        self._end_domain()  # where the kernel scopes signals: all of it, the worker too, at once
        end_leftovers(p.pid)  # else first, while the worker's tree still shows what it started
        for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                if p.exitcode is None:  # not (yet) a group leader: the process alone
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(p.pid, sig)
            p.join(timeout=grace)
            if p.exitcode is not None and sig == signal.SIGTERM:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(p.pid, signal.SIGKILL)  # what the method left in its group
                break

    def _log_tail(self) -> str:
        if self.home is None:
            return ""
        text = read_result_tail(self.home, LOG_FILE, LOG_TAIL).strip()
        return f"\nworker log (end):\n{text}" if text else ""

    def _discard(self) -> None:
        self.end_leftovers()  # what escaped its tree when the worker died: still in its session
        for connection in (self._control, self._jobs_out):
            if connection is not None:
                with contextlib.suppress(OSError):
                    connection.close()
        self._control = self._jobs_out = None
        if self.process is not None and self.process.exitcode is not None:
            with contextlib.suppress(ValueError):
                self.process.close()  # its sentinel and other resources
            self.process = None
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None


def start_workers(
    specs: list[str] | tuple[str, ...],
    options: WorkerOptions = WorkerOptions(),
    while_starting: Callable[[], None] | None = None,
) -> dict[str, UnlearnerWorker]:
    """Start one worker per spec and wait until each resolved its spec.

    `while_starting` runs meanwhile in this thread (e.g. the harness's own torch import, which then
    overlaps the worker's start: the first start waits for the forkserver's imports). WorkerStartError
    for the first spec that does not resolve (the others are closed).
    """
    workers = {spec: UnlearnerWorker(spec, options) for spec in specs}
    failure: list[BaseException] = []

    def start_all() -> None:
        try:
            for worker in workers.values():
                worker.start()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)

    starter = threading.Thread(target=start_all, name="unlearn-audit worker start", daemon=True)
    starter.start()
    try:
        if while_starting is not None:
            while_starting()
        starter.join()
        if failure:
            raise failure[0]
        for worker in workers.values():
            worker.wait_ready()
    except BaseException:
        starter.join()
        close_all(workers)
        raise
    return workers


class SpecCheck:
    """Every spec resolved in one short-lived worker (one interpreter for all of them), for runs whose
    audits happen in other processes (xdist workers) or not at all (--collect-only), where per-spec
    workers would be wasted. Started at once; `finish` collects the answer, so that the caller can
    do other work meanwhile."""

    def __init__(self, specs: list[str] | tuple[str, ...], options: WorkerOptions = WorkerOptions()) -> None:
        self.specs = tuple(specs)
        self.worker = UnlearnerWorker("<spec check>", options)
        self.worker.start({"check_specs": list(self.specs)})

    def finish(self) -> None:
        """WorkerStartError for the first spec that does not resolve."""
        try:
            message = self.worker._read_answer(STARTUP_TIMEOUT)
        except WorkerFailed as exc:
            raise WorkerStartError(
                f"checking the --unlearner specs: the process {exc}{self.worker._log_tail()}"
            ) from None
        finally:
            self.worker.close()
        errors = message.get("errors") if message.get("event") == "specs_checked" else None
        if not isinstance(errors, dict):
            raise WorkerStartError(f"checking the --unlearner specs: unexpected answer {message!r}")
        for spec in self.specs:
            if spec in errors:
                raise WorkerStartError(str(errors[spec]))

    def close(self) -> None:
        """End the checking process (asked to exit, killed if it does not)."""
        self.worker.close()


def check_specs_in_child(specs: list[str] | tuple[str, ...], options: WorkerOptions = WorkerOptions()) -> None:
    """Resolve every spec in one short-lived child process; WorkerStartError for the first that does not."""
    SpecCheck(specs, options).finish()


def close_all(workers: dict[str, UnlearnerWorker]) -> None:
    """Ask every worker to exit first, then wait for each: they wind down together."""
    for worker in workers.values():
        worker.ask_to_exit()
    for worker in workers.values():
        worker.close()
