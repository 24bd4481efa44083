"""Benchmark of the `cifar10-resnet18` profile (prints figures; not a test).

    python benchmarks/bench_cifar.py --loops --out benchmarks/results/loops-DEVICE-DATE.json   # on a GPU
    python benchmarks/bench_cifar.py --loops --quick --device cpu   # the same code paths, CPU-sized
    python benchmarks/bench_cifar.py --table          # the docs' GPU table from benchmarks/results/*.json
    python benchmarks/bench_cifar.py                 # on a GPU machine with CIFAR-10 (or network for it)
    python benchmarks/bench_cifar.py --standin       # the CPU stand-in (synthetic data, narrow ResNet-18)
    python benchmarks/bench_cifar.py --flops-only    # only the FLOPs-based GPU time estimate

`--loops` (benchmarks/loop_bench.py) times every training loop and evaluation of the profile on random
CIFAR-shaped data: the fast trainer, budgeted fine-tuning, the relearning attack (fp32 eager as before,
the recipe's numerics eager, graphed, and three attacker sizes at once), GUS, accuracy and the
interpolation path; each line has seconds, steps/s, achieved TFLOP/s and the ratio to the floor, and
the graphed and eager attacks are compared after the same steps.

Measures, in a fresh temporary cache (or `--cache DIR`):
  1. cold fixture build (`unlearn-audit fixtures build`): per fixture the training time of the poisoned
     original and the retrain reference, their clean test accuracy, and peak GPU memory
     (torch.cuda.max_memory_allocated, recorded by the build); target >= 93% in <= 120 s per model on an H100;
  2. warm suite wall time for NoOp and GradientDescent (interpreter start-up included), with the
     verdicts of Retrain-relevant checks as the report has them;
  3. the FLOPs of one training step of the real ResNet-18 at the recipe's batch size (counted with
     torch.utils.flop_counter on a small batch on CPU, scaled linearly), times the steps per fixture,
     over an assumed sustained bf16 throughput: an estimate of GPU time where none was measured.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

H100_BF16_DENSE_PEAK = 989e12  # FLOP/s, H100 SXM dense bf16 (NVIDIA datasheet)
H100_TF32_DENSE_PEAK = 495e12  # FLOP/s, the same for TF32 (fp32 convolutions through cuDNN)
ASSUMED_UTILISATION = (0.10, 0.20, 0.35)  # pessimistic, typical, optimistic for a ResNet-18 on 32x32 inputs
CANCELING_STEP_OVER_TRAIN_STEP = 2.8  # measured on CPU (width 16, 32 poisons): 2,170 ms vs 785 ms per step


def flops_per_step(batch_size: int, width: int = 64, probe_batch: int = 8) -> dict[str, float]:
    """Forward+backward FLOPs of one training step (counted at `probe_batch`, scaled to `batch_size`)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from unlearn_audit.profiles.cifar.resnet import ResNet18

    torch.set_num_threads(1)
    model = ResNet18(width=width).train()
    x, y = torch.rand(probe_batch, 3, 32, 32), torch.randint(0, 10, (probe_batch,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    total = counter.get_total_flops()
    with FlopCounterMode(display=False) as fwd:
        with torch.no_grad():
            model(x)
    return {
        "per_image_forward": fwd.get_total_flops() / probe_batch,
        "per_image_train": total / probe_batch,
        "per_step": total / probe_batch * batch_size,
    }


def gpu_estimate(profile: str = "cifar10-resnet18", scenario: str = "backdoor") -> None:
    from unlearn_audit.scenarios.recipes import load_profile_recipes

    recipe = load_profile_recipes(profile)[scenario]
    t = recipe.training
    n = 50_000
    steps = math.ceil(n / t.batch_size) * t.epochs
    f = flops_per_step(t.batch_size, int(recipe.model.get("width", 64)))
    total = f["per_step"] * steps
    eval_flops = f["per_image_forward"] * 10_000
    print(
        f"FLOPs (torch.utils.flop_counter; matmul/conv only): forward {f['per_image_forward'] / 1e9:.3f} GFLOP/image, "
        f"train step {f['per_step'] / 1e12:.2f} TFLOP at batch {t.batch_size}"
    )
    print(
        f"one fixture model ({scenario}: {t.epochs} epochs x {math.ceil(n / t.batch_size)} steps = {steps} steps): "
        f"{total / 1e15:.2f} PFLOP (+ {eval_flops / 1e12:.1f} TFLOP per test-set evaluation)"
    )
    for u in ASSUMED_UTILISATION:
        print(
            f"  at {u:.0%} of the H100's {H100_BF16_DENSE_PEAK / 1e12:.0f} TFLOP/s dense bf16 peak: "
            f"{total / (u * H100_BF16_DENSE_PEAK):.0f} s per model"
        )
    # Gradient Canceling runs in fp32 (cuDNN convolutions in TF32 by default), batch-norm in eval mode.
    gc = load_profile_recipes(profile)["gradient_canceling"].attack
    k = round(gc["poison_fraction"] * n)
    gradpc = gc["gradpc_steps"] * n * f["per_image_train"]
    canceling = gc["canceling_steps"] * k * f["per_image_train"] * CANCELING_STEP_OVER_TRAIN_STEP
    print(
        f"gradient_canceling attack ({k} poisons): GradPC {gradpc / 1e15:.1f} PFLOP, "
        f"canceling {canceling / 1e15:.1f} PFLOP "
        f"(a canceling step costs {CANCELING_STEP_OVER_TRAIN_STEP} training steps on the same batch, timed on CPU)"
    )
    for u in ASSUMED_UTILISATION:
        print(
            f"  at {u:.0%} of the H100's {H100_TF32_DENSE_PEAK / 1e12:.0f} TFLOP/s dense TF32 peak: "
            f"GradPC {gradpc / (u * H100_TF32_DENSE_PEAK):.0f} s, "
            f"canceling {canceling / (u * H100_TF32_DENSE_PEAK):.0f} s"
        )


def run_loop_benchmark(args: argparse.Namespace) -> None:
    import datetime
    import platform

    import torch
    from loop_bench import run_loops

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    steps = args.relearn_steps or (12 if args.quick else 400)
    doc = run_loops(
        device,
        quick=args.quick,
        relearn_steps=steps,
        compile_modes=tuple(args.compile or ()),
        cudnn_benchmark=args.cudnn_benchmark,
    )
    doc.update(
        date=datetime.date.today().isoformat(), torch=torch.__version__, python=platform.python_version(), kind="loops"
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.out}")


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
    parser.add_argument("--flops-only", action="store_true")
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
    if args.flops_only:
        gpu_estimate()
        return
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
        k = " or ".join(scenarios)
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
    if not args.standin:
        return
    print()
    gpu_estimate()


if __name__ == "__main__":
    main()
