"""benchmarks/bench_cifar.py --loops, rehearsed on the CPU (`--quick`): every loop the GPU run times is on a line
of its JSON with seconds, steps/s, TFLOP/s and the ratio to the floor, and the trainer's variants are there."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cifar.py"
ATTACK_LINES = ("Witches' Brew step", "Gradient Canceling step", "full-gradient")


def test_the_quick_loop_benchmark_writes_every_line(tmp_path: Path) -> None:
    out = tmp_path / "loops.json"
    cmd = [sys.executable, str(SCRIPT), "--loops", "--quick", "--device", "cpu", "--relearn-steps", "4"]
    compiles = shutil.which("g++") is not None  # torch.compile on the CPU (Inductor) needs a C++ compiler
    extra = ["--compile", "default"] * compiles + ["--cudnn-benchmark"]  # compile forced on the CPU: the GPU path
    # Inductor's CPU C++ does not build under ATEN_CPU_CAPABILITY=default (torch 2.13): the benchmark runs without it.
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    proc = subprocess.run([*cmd, *extra, "--out", str(out)], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["kind"] == "loops" and doc["device"] == "cpu" and doc["quick"] is True and not doc["errors"]
    assert doc["finished"] is True
    names = [row["loop"] for row in doc["loops"]]
    assert [n for n in names if n.startswith("fast trainer") or n.startswith("budgeted")] == [
        "fast trainer (per epoch after the first)",
        *["fast trainer, compiled default"] * compiles,
        "fast trainer, cudnn.benchmark",
        "budgeted fine-tuning (GradientDescent, 10%)",
    ]
    compiled = [row for row in doc["loops"] if "compiled default" in row["loop"]]
    assert len(compiled) == 2 * compiles and all(row["compile_s"] >= 0 for row in compiled)
    if compiles:
        assert compiled[1]["loop"] == "relearning, 3 sizes at once, graphed, compiled default"
        # Both compiled loops checked their gradients against eager first, and passed (training/compile_check.py).
        assert 0 <= compiled[0]["compiled_gradient_excess"] <= 1, compiled[0]
        assert 0 <= compiled[1]["run"]["compiled_gradient_excess"] <= 1, compiled[1]
    assert any(n.startswith("relearning, 3 sizes at once") for n in names)
    assert any(n.startswith("interpolation path") for n in names)
    for row in doc["loops"]:
        assert row["seconds"] > 0 and row["steps_per_s"] > 0 and row["tflops"] >= 0 and row["floor_ratio"] > 0, row
    # The floor is this machine's own matrix rate (fp32 on a CPU), and every ratio is against it.
    chip = doc["chip_flops"]
    assert chip["source"] == "measured" and chip["dtype"] == "float32" and chip["flops"] > 1e8, chip
    trainer = doc["loops"][0]
    # From the counted FLOPs, not from the rounded TFLOP/s (2 decimals of a CPU's ~0.05 were 16% off in CI).
    floor_s = trainer["gflop"] * 1e9 / (doc["floor_fraction"] * chip["flops"])
    assert abs(trainer["seconds"] / floor_s - trainer["floor_ratio"]) <= 0.01 * trainer["floor_ratio"] + 0.01, trainer
    assert abs(trainer["gflop"] * 1e-3 / trainer["seconds"] - trainer["tflops"]) <= 0.001 * trainer["tflops"], trainer
    assert doc["graph_equivalence"]["graphed_vs_eager"]["argmax_agreement"] == 1.0
    # The build-time attack loops in both `[attack] precision`s, and the build estimate that reads them: each
    # scenario in its recipe's precision (Witches' Brew bf16, Gradient Canceling fp32), and in the other one.
    attack = [row for row in doc["loops"] if row["loop"].startswith(ATTACK_LINES)]
    assert [row["attack_precision"] for row in attack] == ["fp32"] * 3 + ["bf16"] * 3, attack
    brew = next(
        row for row in doc["loops"] if row["loop"] == "Witches' Brew step, 16 poisons, [attack] precision = bf16"
    )
    assert brew["full_brew_steps"] == 240 * 8 and brew["full_brew_estimate_s"] > 0
    estimates = {row["scenario"]: row for row in doc["build_estimates"]}
    assert estimates["witches_brew"]["attack_source"] == "measured" and estimates["witches_brew"]["models"] == 3
    assert (
        estimates["witches_brew"]["attack_precision"] == "bf16" and len(estimates["witches_brew"]["total_s_fp32"]) == 2
    )
    assert estimates["gradient_canceling"]["attack_precision"] == "fp32"
    assert len(estimates["gradient_canceling"]["total_s_bf16"]) == 2
    assert estimates["witches_brew"]["shared_models"] == 8  # its null models, trained by the first seed's build


def test_a_stopped_loop_benchmark_still_writes_what_it_timed(tmp_path: Path) -> None:
    """A GPU slot's `timeout` stops an overrunning benchmark with SIGTERM: the lines timed so far are written."""
    out = tmp_path / "loops.json"
    cmd = [sys.executable, str(SCRIPT), "--loops", "--quick", "--device", "cpu", "--relearn-steps", "4"]
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    proc = subprocess.Popen([*cmd, "--out", str(out)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    try:
        for text in proc.stdout:  # the first line timed: the fast trainer's
            if text.startswith("fast trainer"):
                proc.send_signal(signal.SIGTERM)
                break
        proc.stdout.read()
        assert proc.wait(timeout=300) == 124
    finally:
        proc.kill()
    doc = json.loads(out.read_text())
    assert doc["finished"] is False and doc["kind"] == "loops"
    assert doc["loops"][0]["loop"] == "fast trainer (per epoch after the first)"
    assert any(e.startswith("stopped before the end: stopped by signal") for e in doc["errors"])
