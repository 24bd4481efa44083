"""Process isolation (the default): one `unlearn()` in the spec's worker process.

The harness writes what `UnlearningRequest` carries (forget, retain and validation data and the
poisoned original's weights) once per fixture into a private, read-only safetensors file, and
nothing else: the worker never sees the fixture's secret, its test sets or its reference models.
The worker answers with files (the returned weights as safetensors, its report as JSON), which
the harness reads without unpickling anything. A crash or a timeout of the worker becomes a
failing outcome that names it; the session goes on and the next job gets a fresh worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from unlearn_audit.engine.execute import Execution
from unlearn_audit.engine.runner import UnlearnOutcome, budget_for, finish
from unlearn_audit.engine.untrusted_files import read_result, read_result_tail
from unlearn_audit.engine.worker import UnlearnerWorker, WorkerFailed, WorkerStartError
from unlearn_audit.engine.worker_protocol import (
    DATA_FILE,
    MODEL_PREFIX,
    OUTPUT_LIMIT,
    REPORT_FILE,
    STDERR_FILE,
    STDOUT_FILE,
    WEIGHTS_FILE,
    MalformedReport,
    file_sha256,
    parse_report,
)
from unlearn_audit.protocol import Budget
from unlearn_audit.scenarios.fixture import Fixture


class RequestFiles:
    """The request data of each fixture, written once into a private directory of this session."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="unlearn-audit-requests-"))
        self._written: dict[tuple[str, int], tuple[Path, str]] = {}

    def for_fixture(self, fixture: Fixture) -> tuple[Path, str]:
        """(path, sha256) of the fixture's request file, rewritten if anything changed it since."""
        key = (fixture.recipe.name, fixture.seed)
        if key in self._written:
            path, digest = self._written[key]
            if path.exists() and file_sha256(path) == digest:
                return path, digest
        path = self.root / f"{fixture.recipe.name}-seed{fixture.seed}" / DATA_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.chmod(0o600)
        forget, retain, validation = fixture.forget_set(), fixture.retain_set(), fixture.validation_set()
        tensors = {
            "forget_x": forget.inputs,
            "forget_y": forget.labels,
            "retain_x": retain.inputs,
            "retain_y": retain.labels,
            "validation_x": validation.inputs,
            "validation_y": validation.labels,
        }
        tensors.update({MODEL_PREFIX + k: v.detach().cpu() for k, v in fixture.original.state_dict().items()})
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
        path.chmod(0o400)
        self._written[key] = (path, file_sha256(path))
        return self._written[key]

    def close(self) -> None:
        """Remove the folder of request files written for the workers."""
        shutil.rmtree(self.root, ignore_errors=True)


def share_read_only(source: Path, target: Path) -> None:
    """The request file inside the worker's directory: a copy of its own for each job. The worker checks
    its SHA-256 before use.

    Not a hard link, although that would save the copy: every job of the fixture would share one inode,
    and its owner may make it writable again (`chmod` is not something Landlock governs). Red-teamed: a
    method kept a writable link to the inode and flipped a bit of another method's data while that one
    ran, which failed the other method and passed its own."""
    shutil.copyfile(source, target)
    target.chmod(0o400)


REPORT_LIMIT = 16 << 20  # bytes of the worker's report (a short JSON document; a traceback at most)


def _captured_output(result_dir: Path) -> dict[str, Any]:
    """What the method printed during the job (the end of each stream), for the outcome's record."""
    return {
        name: read_result_tail(result_dir, file, OUTPUT_LIMIT)
        for name, file in (("stdout", STDOUT_FILE), ("stderr", STDERR_FILE))
    }


def weights_limit(fixture: Fixture) -> int:
    """The most bytes returned weights may take: the original's state in float64 (4x its float32 size at
    most), plus room for the file's header."""
    state = fixture.original.state_dict().values()
    return 8 * sum(t.numel() for t in state) + (16 << 20)


def run_isolated(
    worker: UnlearnerWorker,
    fixture: Fixture,
    files: RequestFiles,
    *,
    budget_fraction: float,
    seed: int,
    timeout: float,
    device: torch.device,
    exempt_from_budget: bool = False,
) -> UnlearnOutcome:
    """Run the unlearner in its worker process on (fixture, budget); the outcome as `finish` vets it."""
    budget = budget_for(fixture, budget_fraction)
    waiting_since = time.monotonic()
    try:
        worker.ensure_started()  # its private directory is where the job's files go (all it may reach)
    except WorkerStartError as exc:
        return UnlearnOutcome(
            None, 0, 0.0, budget, f"the unlearner's worker process could not be restarted: {exc}", exempt_from_budget
        )
    # What the fresh process per job costs beyond what the previous job's evaluation hid: 0 where the
    # process started meanwhile was ready (the fork server, or a long evaluation), seconds where it was not.
    waited = {"worker_wait_seconds": round(time.monotonic() - waiting_since, 3)}
    outcome = _run_job(worker, fixture, files, budget, seed, timeout, device, exempt_from_budget)
    return dataclasses.replace(outcome, details={**outcome.details, **waited})


def _run_job(
    worker: UnlearnerWorker,
    fixture: Fixture,
    files: RequestFiles,
    budget: Budget,
    seed: int,
    timeout: float,
    device: torch.device,
    exempt_from_budget: bool,
) -> UnlearnOutcome:
    """One job in a started worker: its files, its run, its result read back and vetted; then a fresh process."""
    shared_path, digest = files.for_fixture(fixture)
    assert worker.home is not None
    result_dir = Path(tempfile.mkdtemp(prefix="job-", dir=worker.home))
    data_path = result_dir / DATA_FILE
    share_read_only(shared_path, data_path)
    job: dict[str, Any] = {
        "data_path": str(data_path),
        "data_sha256": digest,
        "result_dir": str(result_dir),
        "model_spec": dict(fixture.recipe.model),
        "input_shape": list(fixture.meta["input_shape"]),
        "num_classes": fixture.num_classes,
        "recipe": dict(fixture.recipe.training.__dict__),
        "budget_fraction": budget.fraction,
        "budget_example_gradients": budget.example_gradients,
        "seed": seed,
        "device": str(device),
        "profile": fixture.recipe.profile,
    }
    try:
        try:
            worker.run(job, timeout)
        except (WorkerFailed, WorkerStartError) as exc:  # died, timed out, or could not be restarted
            return UnlearnOutcome(
                None,
                0,
                timeout,
                budget,
                f"the unlearner's worker process {exc}",
                exempt_from_budget,
                output=_captured_output(result_dir),
            )
        output = _captured_output(result_dir)
        try:
            report = parse_report(read_result(result_dir, REPORT_FILE, REPORT_LIMIT).decode(errors="replace"))
        except (OSError, MalformedReport) as exc:
            return UnlearnOutcome(
                None,
                0,
                0.0,
                budget,
                f"the unlearner's worker wrote no valid report ({exc})",
                exempt_from_budget,
                output=output,
            )
        output["warnings"] = list(report.warnings)
        state = None
        if report.error is None:
            try:
                state = load(read_result(result_dir, WEIGHTS_FILE, weights_limit(fixture)))
            except (OSError, SafetensorError) as exc:
                report_error = f"the returned weights could not be read ({exc})"
                return UnlearnOutcome(
                    None,
                    report.example_gradients,
                    report.seconds,
                    budget,
                    report_error,
                    exempt_from_budget,
                    output=output,
                )
        execution = Execution(
            None,
            report.error,
            report.traceback,
            report.example_gradients,
            report.seconds,
            report.spend_problem,
            report.warnings,
        )
        return finish(execution, state, fixture, budget, device, exempt_from_budget, output)
    finally:
        shutil.rmtree(result_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # (a start that fails now is retried by the next job)
            worker.renew()  # the next job gets a fresh process: nothing the method kept in memory reaches it
