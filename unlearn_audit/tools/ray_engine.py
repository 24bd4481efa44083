"""`unlearn-audit calibrate --engine ray`: a calibration sweep as Ray tasks, one per (method, seed).

Each cell runs the suite for one method on one seed in its own pytest process on some node of the
cluster (`--audit-seeds S --audit-keep-seed-parts`, the sweep's profile and fixture cache), and
returns its JSON report; the driver pools the cells' seeds into the report one local run over all
the seeds writes (`reports.assemble`, with the suite's own pooling code), which the calibration
tables are then made from as for the local engine.

Why cells of one seed: the work of a seed (its fixtures, one unlearn() per scenario) is
independent of the other seeds', so a sweep of M methods over N seeds spreads over M x N cores or
GPUs, where the local engine's xdist spreads the M x scenarios groups only. The cells share the
fixtures through the fixture cache: give `--cache` a path every node sees, or an `s3://` URL
(`--cache s3://bucket/prefix`, the [s3] extra), and each fixture is built once, by whichever cell
needs it first, under the cache's lock.

Resources: a cell asks Ray for one CPU (the suite runs torch on one thread by default) and, for a
profile that trains on the GPU (a recipe with `trainer = "fast"`: `cifar10-resnet18`), one GPU,
which Ray makes the cell's only visible CUDA device. `--gpus-per-cell` overrides that.

Ray is an optional extra (`pip install "unlearn-audit[ray]"`), imported only here, when a sweep
starts. `--address` is passed to `ray.init(address=...)`; without it `ray.init()` connects to the
cluster named by `RAY_ADDRESS`, or starts a local one for the sweep.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unlearn_audit.scenarios.remote import is_remote, local_path
from unlearn_audit.tools.suite_run import method_spec, suite_command

FAILED_EXIT_CODES = {2: "interrupted", 3: "pytest internal error", 4: "usage error", 5: "no tests collected"}
"""pytest exit codes that mean the cell did not audit (1 only means some tests failed: a result)."""


class RayUnavailable(RuntimeError):
    """Ray is not installed: the message says how to install the extra."""


@dataclass(frozen=True)
class Cell:
    """One Ray task: the suite for one method on one seed."""

    method: str
    seed: int
    profile: str
    cache: str | None = None
    select: str | None = None  # pytest -k expression
    cwd: str | None = None  # where the driver runs (used on a node that has it, so that test ids match a local run)

    def command(self, report: Path) -> list[str]:
        """The cell's pytest command; its seed as the range `S-S`, since `--audit-seeds S` means seeds 0..S-1."""
        return suite_command(
            [self.method],
            self.profile,
            f"{self.seed}-{self.seed}",
            report,
            self.cache,
            self.select,
            keep_seed_parts=True,
        )

    @property
    def label(self) -> str:
        return f"{self.method.rpartition(':')[2]} seed {self.seed}"


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    returncode: int
    report: str | None  # the cell's JSON report, as text
    output: str  # the tail of pytest's output
    seconds: float
    node: str

    @property
    def failure(self) -> str | None:
        """Why the cell has no usable result, or None (exit 0 or 1 with a report: the tests ran)."""
        if self.returncode in FAILED_EXIT_CODES:
            return f"pytest exit {self.returncode} ({FAILED_EXIT_CODES[self.returncode]})"
        if self.returncode not in (0, 1):
            return f"pytest exit {self.returncode}" + (" (killed by a signal)" if self.returncode < 0 else "")
        if self.report is None:
            return f"pytest exit {self.returncode} but no report was written"
        return None


def run_cell(cell: Cell) -> CellResult:
    """Run the suite for one cell in a pytest subprocess and return its report (runs on a Ray worker)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="unlearn-audit-cell-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = cell.command(report)
        cwd = cell.cwd if cell.cwd and os.path.isdir(cell.cwd) else tmp
        done = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        text = report.read_text() if report.is_file() else None
    return CellResult(cell, done.returncode, text, done.stdout[-4000:], time.perf_counter() - started, platform.node())


def gpus_for(profile: str) -> float:
    """One GPU per cell for a profile whose recipes train on the GPU (`trainer = "fast"`), else none."""
    from unlearn_audit.scenarios.recipes import load_profile_recipes

    return 1.0 if any(r.training.trainer == "fast" for r in load_profile_recipes(profile).values()) else 0.0


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailable(
            'unlearn-audit calibrate --engine ray needs Ray: pip install "unlearn-audit[ray]" (or use --engine local)'
        ) from None
    return ray


def run_cells(
    cells: list[Cell], address: str | None, gpus_per_cell: float, log: Callable[[str], None] = print
) -> list[CellResult]:
    """Every cell as a Ray task (one CPU, `gpus_per_cell` GPUs); a line as each one finishes."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, log_to_driver=False, **({} if address else {"include_dashboard": False}))
    try:
        task = ray.remote(num_cpus=1, num_gpus=gpus_per_cell, max_retries=0)(run_cell)
        pending = {task.remote(c): c for c in cells}
        results: list[CellResult] = []
        log(
            f"ray: {len(cells)} cells (method x seed) on {ray.cluster_resources().get('CPU', 0):g} CPUs, "
            f"{ray.cluster_resources().get('GPU', 0):g} GPUs; {gpus_per_cell:g} GPU(s) per cell"
        )
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except Exception as exc:  # the task itself died (a lost node, a worker crash): a failed cell
                result = CellResult(cell, -1, None, f"{type(exc).__name__}: {exc}", 0.0, "?")
            results.append(result)
            status = result.failure or ("all tests passed" if result.returncode == 0 else "some tests failed")
            log(f"[{len(results)}/{len(cells)}] {cell.label}: {status}, {result.seconds:.0f} s on {result.node}")
        return results
    finally:
        if started_here:
            ray.shutdown()


def run_sweep(
    methods: list[str],
    profile: str,
    seeds: str,
    report: Path,
    cache: str | Path | None = None,
    *,
    address: str | None = None,
    select: str | None = None,
    gpus_per_cell: float | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Run (method x seed) cells on Ray and write their pooled report to `report` (the cells' own reports
    beside it, in `<report stem>-cells/`). 0 when every cell ran (its tests passing or not), 2 otherwise:
    a sweep with a missing seed would pool fewer seeds than asked, so no report is written then."""
    from unlearn_audit.plugin.settings import parse_seeds
    from unlearn_audit.reports.assemble import assemble_reports
    from unlearn_audit.reports.collector import write_report

    cache = cache or os.environ.get("UNLEARN_AUDIT_CACHE")  # the cells may run where this variable is not set
    if cache and not is_remote(cache):
        cache = str(local_path(cache).resolve())
    gpus = gpus_for(profile) if gpus_per_cell is None else gpus_per_cell
    cells = [
        Cell(method_spec(m), seed, profile, str(cache) if cache else None, select, os.getcwd())
        for m in methods
        for seed in parse_seeds(str(seeds))
    ]  # method-major: a method's seeds build fixtures at once
    started = time.perf_counter()
    results = run_cells(cells, address, gpus, log)
    order = {c: i for i, c in enumerate(cells)}
    results.sort(key=lambda r: order[r.cell])
    cell_dir = report.with_name(report.stem + "-cells")
    cell_dir.mkdir(parents=True, exist_ok=True)
    for r in results:
        if r.report is not None:
            (cell_dir / f"{r.cell.label.replace(' ', '-')}.json").write_text(r.report)
    failed = [r for r in results if r.failure]
    if failed:
        for r in failed:
            log(f"FAILED cell {r.cell.label} on {r.node}: {r.failure}; the end of its output:\n{r.output.rstrip()}")
        log(
            f"ray: {len(failed)} of {len(cells)} cells failed; no pooled report written "
            f"(the cells' reports are in {cell_dir})"
        )
        return 2
    write_report(assemble_reports([(r.cell.label, json.loads(r.report or "")) for r in results]), report)
    log(f"ray: {len(cells)} cells in {time.perf_counter() - started:.0f} s; pooled report {report}")
    return 0
