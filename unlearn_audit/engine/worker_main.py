"""The worker process that runs one unlearner spec (`serve`, a multiprocessing target).

Started by `unlearn_audit.engine.worker.UnlearnerWorker` in a private temporary directory, with
no cache path in its environment. It gets a hello (JSON) and then one job per message on its jobs
pipe, and answers on its control pipe (JSON lines): `ready` or `spec_error` once, then `done`
per job. A job names the request's data file (safetensors, see `worker_protocol`) and a result
directory; the worker writes the returned weights and its report there. Only the request's data
ever reaches this process: never the fixture's secret, its test sets or its reference models.

Whatever the method does to the process (global dtype, monkeypatching, threads, memory) stays here
and dies with it; the harness restarts a worker after a crash or a timeout.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, BinaryIO


def _send(control: BinaryIO, message: dict[str, Any]) -> None:
    from unlearn_audit.engine.worker_protocol import encode

    control.write(encode(message))
    control.flush()


def _address_space() -> int:
    """Bytes of address space this process maps now (Linux: VmSize), 0 where unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _limit_memory(max_bytes: int | None, device: str | None) -> None:
    """Cap what the method may map (`--audit-max-memory`) when the audit runs on the CPU.

    The cap is on address space beyond what the worker maps after its start-up: torch and the
    harness reserve about 3 GB of address space before anything runs, which says nothing about
    the method. Not on CUDA: its driver reserves far more address space than it uses.
    """
    import torch

    on_cuda = (device or "").startswith("cuda") or (device is None and torch.cuda.is_available())
    if max_bytes and not on_cuda:
        import resource

        limit = _address_space() + max_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


class _RedirectedOutput:
    """Point file descriptors 1 and 2 at files for the duration of a job (C-level output included)."""

    def __init__(self, stdout: Path, stderr: Path) -> None:
        self.paths = (stdout, stderr)

    def __enter__(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = (os.dup(1), os.dup(2))
        for fd, path in zip((1, 2), self.paths):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)

    def __exit__(self, *exc: Any) -> None:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - the method may have replaced or closed them
            pass
        for fd, saved in zip((1, 2), self.saved):
            os.dup2(saved, fd)
            os.close(saved)


def run_job(unlearner: Any, job: dict[str, Any]) -> None:
    """Run one unlearn() as the job describes and write its report and weights to the job's directory."""
    import torch
    from safetensors.torch import load_file, save_file

    from unlearn_audit.engine.counting import ExampleGradientCounter
    from unlearn_audit.engine.execute import execute
    from unlearn_audit.engine.worker_protocol import (
        MODEL_PREFIX,
        REPORT_FILE,
        STDERR_FILE,
        STDOUT_FILE,
        WEIGHTS_FILE,
        UnlearnReport,
        file_sha256,
    )
    from unlearn_audit.profiles.models import model_factory
    from unlearn_audit.protocol import Budget, ExampleSet, TrainingRecipe, UnlearningRequest

    out = Path(job["result_dir"])
    data_path = Path(job["data_path"])
    if file_sha256(data_path) != job["data_sha256"]:
        raise RuntimeError(f"the request data file {data_path} changed after the harness wrote it")
    tensors = load_file(str(data_path))
    device = torch.device(job["device"])
    build = model_factory(job["model_spec"], tuple(job["input_shape"]), int(job["num_classes"]))
    with torch.random.fork_rng(devices=[]):  # building models must not move the seeded generators
        reference = build()
        model = build()
    model.load_state_dict({k[len(MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)})
    model.to(device)
    seed = int(job["seed"])
    counter = ExampleGradientCounter()
    request = UnlearningRequest(
        forget=ExampleSet(tensors["forget_x"], tensors["forget_y"]),
        retain=ExampleSet(tensors["retain_x"], tensors["retain_y"]),
        budget=Budget(float(job["budget_fraction"]), int(job["budget_example_gradients"])),
        recipe=TrainingRecipe(**job["recipe"]),
        model_factory=lambda: build().to(device),
        num_classes=int(job["num_classes"]),
        device=device,
        seed=seed,
        generator=torch.Generator().manual_seed(seed),
        profile=str(job["profile"]),
        validation=ExampleSet(tensors["validation_x"], tensors["validation_y"]),
    )
    with _RedirectedOutput(out / STDOUT_FILE, out / STDERR_FILE):
        done = execute(unlearner, model, request, reference, counter)
    if done.returned is not None:
        state = {
            k: v.detach().to("cpu", copy=True).contiguous()
            for k, v in done.returned.state_dict().items()
            if isinstance(v, torch.Tensor)
        }
        save_file(state, str(out / WEIGHTS_FILE))
    from unlearn_audit.engine.signal_guard import take_attempts

    signalled = take_attempts()
    error = done.error
    if signalled and error is None:
        error = (
            f"unlearn() tried to signal processes outside its worker ({', '.join(signalled[:3])}; refused): "
            "a method must not signal the harness"
        )
    report = UnlearnReport(
        error, done.traceback, done.example_gradients, done.seconds, done.spend_problem, done.warnings
    )
    (out / REPORT_FILE).write_text(json.dumps(report.to_json()))


def import_harness_modules() -> None:
    """Everything the harness itself runs in a worker, imported before the memory cap: compiling a
    module under a tight address-space limit can fail (CPython then reports a SyntaxError), and the
    cap is meant for the method, not for the harness's start-up. A forkserver has imported them already."""
    from importlib import import_module

    from unlearn_audit.engine.worker_protocol import WORKER_PRELOAD

    for module in WORKER_PRELOAD:
        import_module(module)


def _confine(hello: dict[str, Any]) -> str:
    """Apply the hello's sandbox (`engine.sandbox`) to this process; what applied, in words."""
    settings = hello.get("sandbox")
    if settings is None:
        return "none: --audit-sandbox off"
    import torch

    from unlearn_audit.engine.sandbox import confine, editable_project_dirs, link_targets, module_dirs, worker_plan

    device = str(hello.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    specs = hello.get("check_specs") or [hello["spec"]]
    packages = {spec.partition(":")[0].split(".")[0] for spec in specs if ":" in spec} | {"unlearn_audit"}
    harness = link_targets(module_dirs(["unlearn_audit"]))  # a package of links (the GPU benchmarks' layout)
    readable = [p for p in sys.path if p] + module_dirs(sorted(packages)) + harness + editable_project_dirs()
    plan = worker_plan(
        os.getcwd(),
        readable,
        settings.get("deny", []),
        cuda=device.startswith("cuda"),
        allow_network=bool(settings.get("allow_network")),
        keep=hello.get("caches"),
    )
    return confine(plan).describe()


def _start_reaper(hello: dict[str, Any]) -> int | None:
    """The pid of the process that ends everything this worker starts (`engine.domain_reaper`), where the
    sandbox is on and the kernel scopes signals; None otherwise."""
    if hello.get("sandbox") is None:
        return None
    from unlearn_audit.engine import domain_reaper

    harness = hello.get("harness_pid")
    return domain_reaper.start(outside_pid=os.getppid(), harness_pid=harness if isinstance(harness, int) else None)


def _resolve_error(spec: str, exc: BaseException) -> str:
    from unlearn_audit.engine.specs import SpecError

    return f"{exc}" if isinstance(exc, SpecError) else f"--unlearner {spec!r}: {type(exc).__name__}: {exc}"


def main(hello: dict[str, Any], jobs: Connection, control: BinaryIO) -> int:
    """Resolve the spec (or, for a spec check, every spec), then run jobs until asked to exit."""
    sys.path[:0] = [p for p in hello.get("sys_path", []) if p not in sys.path]
    import torch

    torch.set_num_threads(int(hello.get("threads") or 1))
    import_harness_modules()
    from unlearn_audit.engine.specs import resolve_unlearner

    _limit_memory(hello.get("max_memory"), hello.get("device"))
    reaper = _start_reaper(hello)  # before the worker's own confinement, in a domain around it
    sandbox = _confine(hello)  # before the method's module is imported: it runs confined from its first line
    # The first message, always, and before any of the method's code ran: the harness trusts what it names.
    _send(control, {"event": "confined", "reaper": reaper})
    from unlearn_audit.engine import signal_guard

    signal_guard.install()  # signals outside the worker: refused, and the job that tried fails
    from unlearn_audit.engine.counting import wrap_torch_transforms

    wrap_torch_transforms()  # before the method's `from torch.func import vmap`: the count sees through it

    if "check_specs" in hello:  # a short-lived checker: resolve every spec, report, exit
        errors = {}
        for spec in hello["check_specs"]:
            try:
                resolve_unlearner(spec)
            except BaseException as exc:  # noqa: BLE001
                errors[spec] = _resolve_error(spec, exc)
        _send(control, {"event": "specs_checked", "errors": errors, "sandbox": sandbox})
        return 0
    try:
        unlearner = resolve_unlearner(hello["spec"])
    except BaseException as exc:  # noqa: BLE001 - a spec that does not resolve is a usage error
        _send(control, {"event": "spec_error", "message": _resolve_error(hello["spec"], exc)})
        return 0
    _send(control, {"event": "ready", "pid": os.getpid(), "sandbox": sandbox})
    while True:
        try:
            job = json.loads(jobs.recv_bytes())
        except EOFError:  # the harness is gone
            break
        if job.get("exit"):
            break
        try:
            run_job(unlearner, job)
            _send(control, {"event": "done", "job": job["job"]})
        except Exception as exc:  # noqa: BLE001 - a harness-side failure of this job, reported as such
            import traceback

            _send(
                control,
                {
                    "event": "job_error",
                    "job": job["job"],
                    "message": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(),
                },
            )
    return 0


def serve(hello: dict[str, Any], jobs: Connection, control: Connection, home: str, env: dict[str, str]) -> None:
    """The worker process's entry point (a multiprocessing target).

    It becomes a session of its own (so that the harness can end it with everything it started), works
    in its private directory with the harness's settings out of its environment, writes its output to
    the directory's log, and ends through multiprocessing (`SystemExit` with its status): its clean-up runs,
    which unregisters the semaphores the method made (tqdm makes one for any progress bar), else the
    harness's resource tracker warned at the end of the session of "leaked semaphore objects".
    """
    os.setsid()
    from unlearn_audit.engine.reaper import become_subreaper

    become_subreaper()  # what the method detaches stays below this process, where the harness ends it
    os.chdir(home)
    os.environ.clear()
    os.environ.update(env)
    os.environ["TMPDIR"] = home  # the one place it may write (tempfile reads this, torch's caches follow it)
    caches = str(hello.get("caches") or home)  # kept for the spec's next process (one process per job)
    os.environ.setdefault("CUDA_CACHE_PATH", os.path.join(caches, ".nv"))  # the driver's kernel cache, not ~/.nv
    if hello.get("sandbox") is not None:  # it may write only there: so must the compilers the method uses
        os.environ.update(compiler_caches(caches))
    import tempfile

    tempfile.tempdir = None  # a forkserver may have looked it up before this process was forked
    from unlearn_audit.engine.forkserver_guard import drop_alive_pipe

    drop_alive_pipe()  # the method cannot ask the fork server for a process outside this worker's domain
    _forget_inherited_multiprocessing_folder()
    log = os.open(os.path.join(home, "worker.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    for fd in (1, 2):
        os.dup2(log, fd)
    os.close(log)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the method cannot read anything on stdin
    os.close(devnull)
    faulthandler.enable()  # a segfault leaves a Python traceback in the worker's log
    status = 1
    try:
        status = main(hello, jobs, os.fdopen(os.dup(control.fileno()), "wb", buffering=0))
    except BaseException:  # noqa: BLE001 - said in the log; the harness sees the exit status
        import traceback

        traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the method may have closed them
            pass
    sys.exit(status)


def compiler_caches(home: str) -> dict[str, str]:
    """Where `torch.compile` (Inductor, and Triton on a GPU) and the CUDA driver keep what they build, inside
    a folder a sandboxed worker may write (the spec's caches folder, which its next process finds). Their
    defaults or the user's settings (`~/.triton`, a shared `TORCHINDUCTOR_CACHE_DIR`) lie where the sandbox
    forbids writing: a compiled method failed with `InductorError: PermissionError`."""
    return {
        "TORCHINDUCTOR_CACHE_DIR": os.path.join(home, ".cache", "torchinductor"),
        "TRITON_HOME": home,
        "TRITON_CACHE_DIR": os.path.join(home, ".triton", "cache"),
        "CUDA_CACHE_PATH": os.path.join(home, ".nv"),
    }


def _forget_inherited_multiprocessing_folder() -> None:
    """Let multiprocessing make its folder (for its sockets: a fork server's, a DataLoader's descriptor
    passing) in this worker's home, like a fresh process would.

    multiprocessing copies the starting process's settings into each Process object, and the harness's
    include the folder it made when it started its fork server: every worker after the first inherited
    it, and the sandbox forbids writing there, so a method's `Pool()` or `DataLoader(num_workers=2)`
    failed with a bare PermissionError. The standard library has no public way to reset the setting;
    `_config` has held it since Python 3.4, and `tests/engine/test_worker.py` fails if that changes."""
    import multiprocessing

    settings = getattr(multiprocessing.current_process(), "_config", None)
    if isinstance(settings, dict):
        settings.pop("tempdir", None)
