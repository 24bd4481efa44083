"""Benchmark of the `tiny` profile on this machine (prints figures; not a test).

    python benchmarks/bench_tiny.py [--seeds 1] [--repeat 3]

Measures, in a fresh temporary cache:
  1. cold fixture build for the profile (`unlearn-audit fixtures build`), target <= 120 s on 2 CPU cores;
  2. warm full-suite wall time for NoOp (the harness's own cost), target <= 30 s;
  3. warm full-suite wall time for GradientDescent, target <= 60 s;
  4. warm suite of four methods serially and with `-n 2` (pytest-xdist), and the speed-up (target:
     >= 1.5x on 2 cores), next to the interpreter's start-up with torch imported; the same with every
     worker process spawned instead of forked from multiprocessing's forkserver
     (UNLEARN_AUDIT_START_METHOD=spawn);
     and the machine's own limit: two copies of a single-threaded CPU-bound torch loop at once
     against one alone (the most any `-n 2` run can gain here);
  5. the cost of process isolation: the warm suites of NoOp and GradientDescent with
     `--audit-isolation process` (the default) and `inline`, and the difference (target: at most
     3 s more per unlearner per session);
  6. the cost of the Landlock sandbox: the same suites with `--audit-sandbox on` (the default) and
     `off` (target: at most 0.5 s more per unlearner per session).
Wall times include interpreter and torch start-up, as a user sees them; the median of
`--repeat` runs is printed with min and max. Hypothesis's pytest plugin is disabled (see QUIET).
For the four-method runs, the phases of the last
repeat are printed too (`phase_timer.py`: the time before the first test, each process's test
window, the time from the last test to the exit).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
# Hypothesis (in the [test] extra, not the product) ships a pytest plugin whose end-of-run summary
# imports all of hypothesis: 1.5 s per pytest process, the xdist workers' included (cProfile, 2 cores).
# A user's environment may or may not have it; the benchmark measures the harness without it.
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, int]:
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0, rc


def phased(cmd: list[str], cwd: Path, folder: Path, extra_env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """`timed`, with `phase_timer` recording each pytest process's phases into `folder`."""
    from phase_timer import ENV, summarize

    folder.mkdir(parents=True)
    path = os.pathsep.join(p for p in (str(BENCHMARKS), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, **(extra_env or {}), ENV: str(folder), "PYTHONPATH": path}
    started = time.time()
    seconds, rc = timed([*cmd, "-p", "phase_timer"], cwd, env)
    return seconds, rc, summarize(folder, started, seconds)


# A single-threaded CPU-bound loop like the harness's own work (small-model training steps).
LOOP = """
import time, torch
torch.set_num_threads(1); torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
x, y = torch.randn(256, 64), torch.randint(0, 10, (256,))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
t = time.perf_counter()
for _ in range(2000):
    opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
print(time.perf_counter() - t)
"""


def concurrency_ceiling(py: str, repeat: int) -> str:
    """The most two processes can gain over one on this machine: the same loop twice in sequence
    against twice at once (shared caches, memory bandwidth and clock limits make the second copy
    slower than the first). No `-n 2` run can exceed it."""
    ratios = []
    for _ in range(repeat):
        alone = float(subprocess.check_output([py, "-c", LOOP]))
        both = [subprocess.Popen([py, "-c", LOOP], stdout=subprocess.PIPE) for _ in range(2)]
        at_once = max(float(p.communicate()[0]) for p in both)
        ratios.append(2 * alone / at_once)
    return f"{statistics.median(ratios):.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cache = work / "cache"
        build, rc = timed(
            [
                py,
                "-m",
                "unlearn_audit.tools.cli",
                "fixtures",
                "build",
                "--cache",
                str(cache),
                "--seeds",
                str(args.seeds),
            ],
            work,
        )
        assert rc == 0, "fixture build failed"
        metas = [json.loads(p.read_text()) for p in cache.glob("*/*/meta.json")]
        print(
            f"cold fixture build, profile tiny, {len(metas)} fixtures ({args.seeds} seed(s)): {build:.1f} s wall "
            f"(target <= 120 s); per fixture: "
            + ", ".join(f"{m['scenario']}/seed{m['seed']} {m['build_seconds']:.1f} s" for m in metas)
        )

        def suite(unlearners: list[str], *extra: str) -> float:
            """Wall seconds of one warm pytest run of the conformance suite (rc 0 or 1: verdicts may fail)."""
            args_ = [a for u in unlearners for a in ("--unlearner", f"unlearn_audit.methods:{u}")]
            command = [py, "-m", "pytest", "-q", *QUIET, *args_, "--audit-cache", str(cache)]
            t, rc = timed([*command, "--audit-seeds", str(args.seeds), *extra], work)
            assert rc in (0, 1), f"pytest exited {rc}"
            return t

        runs: tuple[tuple[str, int, list[str]], ...] = (
            ("NoOp", 30, []),
            ("GradientDescent", 60, []),
            ("NoOp", 30, ["-k", "not relearning_resistant and not not_mode_connected"]),
        )
        medians: dict[tuple[str, str], float] = {}
        for method, target, extra in runs:
            report = work / f"{method}.json"
            times = [suite([method], "--audit-report", str(report), *extra) for _ in range(args.repeat)]
            doc = json.loads(report.read_text())
            unlearn = sum({r["scenario"]: r["meta"].get("unlearn_seconds", 0) for r in doc["results"]}.values())
            label = f"{method}, foundation checks only (no relearning / mode connectivity)" if extra else method
            if not extra:
                medians[(method, "process")] = statistics.median(times)
            print(
                f"warm suite, {label}: median {statistics.median(times):.1f} s wall "
                f"(min {min(times):.1f}, max {max(times):.1f}; "
                f"{len(doc['results'])} tests; unlearn() itself {unlearn:.1f} s) (target <= {target} s)"
            )

        startup = [timed([py, "-c", "import torch, unlearn_audit.engine.session"], work)[0] for _ in range(args.repeat)]
        print(f"interpreter start-up with torch and the engine imported: median {statistics.median(startup):.1f} s")
        four = [
            a
            for m in ("NoOp", "GradientDescent", "GradientAscent", "NegGradPlus")
            for a in ("--unlearner", f"unlearn_audit.methods:{m}")
        ]
        spawned = {"UNLEARN_AUDIT_START_METHOD": "spawn"}
        for label, extra, env in (
            ("serial", [], {}),
            ("-n 2", ["-n", "2"], {}),
            ("serial, workers spawned (no forkserver)", [], spawned),
            ("-n 2, workers spawned (no forkserver)", ["-n", "2"], spawned),
        ):
            times, phases = [], ""
            for i in range(args.repeat):
                t, rc, phases = phased(
                    [
                        py,
                        "-m",
                        "pytest",
                        "-q",
                        *QUIET,
                        *four,
                        "--audit-cache",
                        str(cache),
                        "--audit-seeds",
                        str(args.seeds),
                        *extra,
                    ],
                    work,
                    work / f"phases-{len(medians)}-{i}",
                    env,
                )
                assert rc in (0, 1), f"pytest exited {rc}"
                times.append(t)
            medians[("four", label)] = statistics.median(times)
            print(
                f"warm suite, 4 methods, {label}: median {statistics.median(times):.1f} s "
                f"(min {min(times):.1f}, max {max(times):.1f}); "
                f"phases of the last run:\n{phases}"
            )
        print(
            f"xdist speed-up, 4 methods: {medians[('four', 'serial')] / medians[('four', '-n 2')]:.2f}x "
            "(target >= 1.5x); "
            f"with workers spawned: {medians[('four', 'serial, workers spawned (no forkserver)')] / medians[('four', '-n 2, workers spawned (no forkserver)')]:.2f}x"  # noqa: E501
        )
        print(
            f"this machine's ceiling for two processes (a CPU-bound torch loop twice in sequence / twice at once): "
            f"{concurrency_ceiling(py, args.repeat)}"
        )
        for method in ("NoOp", "GradientDescent"):
            times = [suite([method], "--audit-isolation", "inline") for _ in range(args.repeat)]
            inline = statistics.median(times)
            print(
                f"cost of process isolation, {method}: {medians[(method, 'process')]:.1f} s (process) - {inline:.1f} s "
                f"(inline, min {min(times):.1f}, max {max(times):.1f}) "
                f"= {medians[(method, 'process')] - inline:+.1f} s "
                "(target <= +3 s per unlearner)"
            )
        for method in ("NoOp", "GradientDescent"):
            # Interleaved, on and off in turn: measured one after the other, later runs find warmer caches.
            pairs = [(suite([method]), suite([method], "--audit-sandbox", "off")) for _ in range(args.repeat)]
            on, off = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
            print(
                f"cost of the sandbox, {method} (interleaved): {on:.1f} s (sandboxed) - {off:.1f} s "
                f"(--audit-sandbox off) = {on - off:+.1f} s; per pair: "
                + ", ".join(f"{a - b:+.1f}" for a, b in pairs)
                + " (target <= +0.5 s per unlearner)"
            )


if __name__ == "__main__":
    main()
