"""Benchmark of the `cifar10-resnet18` profile (prints figures; not a test).

    python benchmarks/bench_cifar.py --loops --out benchmarks/results/loops-DEVICE-DATE.json   # on a GPU
    python benchmarks/bench_cifar.py --loops --quick --device cpu   # the same code paths, CPU-sized
    python benchmarks/bench_cifar.py --table          # the docs' GPU table from benchmarks/results/*.json
    python benchmarks/bench_cifar.py                 # on a GPU machine with CIFAR-10 (or network for it)
    python benchmarks/bench_cifar.py --standin       # the CPU stand-in (synthetic data, narrow ResNet-18)
    python benchmarks/build_estimate.py LOOPS.json   # each scenario's build, estimated from a loops file

`--loops` (benchmarks/loop_bench.py) times every training loop and evaluation of the profile on random
CIFAR-shaped data: the fast trainer, budgeted fine-tuning, the build-time attack loops (Witches' Brew
brewing, Gradient Canceling's full-gradient passes and canceling steps), the relearning attack (fp32 eager
as before, the recipe's numerics eager, graphed, and three attacker sizes at once), GUS, accuracy and the
interpolation path; each line has seconds, steps/s, achieved TFLOP/s and the ratio to the floor, and
the graphed and eager attacks are compared after the same steps. The JSON ends with each scenario's
build estimated from those lines (`build_estimates`, benchmarks/build_estimate.py).

Measures, in a fresh temporary cache (or `--cache DIR`):
  1. cold fixture build (`unlearn-audit fixtures build`): per fixture the training time of the poisoned
     original and the retrain reference, their clean test accuracy, and peak GPU memory
     (torch.cuda.max_memory_allocated, recorded by the build); target >= 93% in <= 120 s per model on an H100;
  2. warm suite wall time for NoOp and GradientDescent (interpreter start-up included), with the
     verdicts of Retrain-relevant checks as the report has them.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpu_validate import scenario_keyword  # benchmarks/ is the script's folder, first on sys.path


def run_loop_benchmark(args: argparse.Namespace) -> None:
    import datetime
    import platform

    import torch
    from loop_bench import run_loops

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    steps = args.relearn_steps or (12 if args.quick else 400)
    doc: dict = {}

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    # `timeout` stops a run that overruns its slot with SIGTERM: the lines timed so far are still written.
    signal.signal(signal.SIGTERM, stop)
    try:
        run_loops(
            device,
            quick=args.quick,
            relearn_steps=steps,
            compile_modes=tuple(args.compile or ()),
            cudnn_benchmark=args.cudnn_benchmark,
            doc=doc,
        )
        doc["finished"] = True
    except (SystemExit, KeyboardInterrupt) as exc:
        doc["finished"] = False
        doc.setdefault("errors", []).append(f"stopped before the end: {exc or type(exc).__name__}")
        print(f"stopped before the end: {exc or type(exc).__name__}; writing the lines timed so far", flush=True)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    doc.update(
        date=datetime.date.today().isoformat(), torch=torch.__version__, python=platform.python_version(), kind="loops"
    )
    # What each scenario's build should take at these speeds (benchmarks/build_estimate.py).
    from build_estimate import estimate, render

    try:
        doc["build_estimates"] = estimate(doc)
        print(render(doc["build_estimates"], doc), flush=True)
    except (SystemExit, KeyError) as exc:  # a run stopped before the lines the estimate needs
        print(f"no build estimate: {exc}", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.out}")
    if not doc["finished"]:
        raise SystemExit(124)


def timed(cmd: list[str], cwd: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, cwd=cwd)
    return time.perf_counter() - t0, rc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--standin", action="store_true", help="the CPU stand-in profile (cifar10-resnet18-standin)")
    parser.add_argument("--device", default=None, help="build and audit device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--scenario", action="append", default=None, help="only these scenarios (default: gaussian, backdoor)"
    )
    parser.add_argument("--cache", default=None, help="fixture cache (default: a fresh temporary directory)")
    parser.add_argument("--loops", action="store_true", help="per-loop figures (benchmarks/loop_bench.py)")
    parser.add_argument("--quick", action="store_true", help="with --loops: CPU-sized data and model")
    parser.add_argument(
        "--relearn-steps", type=int, default=None, help="with --loops: attack steps timed (default 400; quick 12)"
    )
    parser.add_argument("--out", default=None, help="with --loops: write the JSON here")
    parser.add_argument(
        "--compile",
        action="append",
        default=None,
        metavar="MODE",
        help="with --loops: also time the fast trainer under this torch.compile mode (repeatable; forced on a CPU)",
    )
    parser.add_argument(
        "--cudnn-benchmark", action="store_true", help="with --loops: also time the trainer with cudnn.benchmark on"
    )
    parser.add_argument("--table", action="store_true", help="print the docs' GPU table from benchmarks/results/*.json")
    args = parser.parse_args()
    if args.table:
        from gpu_table import render_table

        print(render_table(Path(__file__).parent / "results"))
        return
    if args.loops:
        run_loop_benchmark(args)
        return
    profile = "cifar10-resnet18-standin" if args.standin else "cifar10-resnet18"
    scenarios = args.scenario or ["gaussian", "backdoor"]
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cache = Path(args.cache) if args.cache else work / "cache"
        device = ["--device", args.device] if args.device else []
        cmd = [
            py,
            "-m",
            "unlearn_audit.tools.cli",
            "fixtures",
            "build",
            "--profile",
            profile,
            "--cache",
            str(cache),
            *device,
        ]
        for s in scenarios:
            cmd += ["--scenario", s]
        build, rc = timed(cmd, work)
        assert rc == 0, "fixture build failed"
        print(f"\n== {profile}: cold fixture build {build:.1f} s wall ({', '.join(scenarios)})")
        for meta_path in sorted(cache.glob(f"{profile}/*/meta.json")):
            m = json.loads(meta_path.read_text())
            v, secs = m.get("validation", {}), m.get("train_seconds", {})
            mem = m.get("peak_gpu_memory_bytes", {})
            mem_text = ", peak GPU memory " + "/".join(f"{b / 2**30:.2f} GiB" for b in mem.values()) if mem else ""
            print(
                f"  {m['scenario']} seed {m['seed']} on {m['device']}: original {secs.get('original', 0):.1f} s -> "
                f"{v.get('original_test_accuracy', 0):.2%}, retrain {secs.get('retrain', 0):.1f} s -> "
                f"{v.get('retrain_test_accuracy', 0):.2%}{mem_text}; "
                f"attack effective: {v.get('effective')} ({v.get('rule')})"
            )
        k = scenario_keyword(scenarios)
        for method in ("NoOp", "GradientDescent"):
            report = work / f"{method}.json"
            audit_device = ["--audit-device", args.device] if args.device else []
            t, rc = timed(
                [
                    py,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "--unlearner",
                    f"unlearn_audit.methods:{method}",
                    "--audit-profile",
                    profile,
                    "--audit-cache",
                    str(cache),
                    "--audit-report",
                    str(report),
                    "-k",
                    k,
                    *audit_device,
                ],
                work,
            )
            assert rc in (0, 1), f"pytest exited {rc}"
            doc = json.loads(report.read_text())
            unlearn = sum({r["scenario"]: r["meta"].get("unlearn_seconds", 0) for r in doc["results"]}.values())
            verdicts = ", ".join(f"{r['check']}/{r['scenario']}={r['outcome']}" for r in doc["results"])
            print(
                f"warm suite, {method}: {t:.1f} s wall ({len(doc['results'])} tests; "
                f"unlearn() itself {unlearn:.1f} s)\n  {verdicts}"
            )


if __name__ == "__main__":
    main()
