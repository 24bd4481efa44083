"""The documentation's GPU tables, generated from the committed benchmark JSON in benchmarks/results/.

    python benchmarks/bench_cifar.py --table     # prints the tables

The docs build renders them (docs/_hooks/generate.py), so a new committed run changes the docs
without a hand edit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _runs(results: Path, kind: str) -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(results.glob(f"*-{kind}.json")):
        docs.append((path.name.removesuffix(f"-{kind}.json"), json.loads(path.read_text())))
    return docs


def _num(v: Any, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def loops_table(results: Path) -> str:
    runs = _runs(results, "loops")
    if not runs:
        return "_no loop benchmark committed_"
    names = [name for name, _ in runs]
    loops: list[str] = []
    for _, doc in runs:
        for row in doc["loops"]:
            if row["loop"] not in loops:
                loops.append(row["loop"])
    header = "| loop | " + " | ".join(f"{n}: ms/step, TFLOP/s, x floor" for n in names) + " |"
    lines = [header, "|---|" + "---|" * len(names)]
    for loop in loops:
        cells = []
        for _, doc in runs:
            row = next((r for r in doc["loops"] if r["loop"] == loop), None)
            cells.append(
                "—"
                if row is None
                else f"{_num(row['ms_per_step'], '.2f')}, {_num(row['tflops'], '.0f')}, "
                f"x{_num(row['floor_ratio'], '.1f')}"
            )
        lines.append(f"| {loop} | " + " | ".join(cells) + " |")
    notes = []
    for name, doc in runs:
        eq = doc.get("graph_equivalence", {}).get("graphed_vs_eager")
        snap = doc.get("snapshot_equivalence", {})
        parts = [f"{doc.get('gpu', doc['device'])}, torch {doc.get('torch')}, {doc.get('date')}", _floor_note(doc)]
        if eq:
            parts.append(
                f"graphed vs eager after {doc['graph_equivalence']['steps']} steps: max |logit diff| "
                f"{eq['max_abs_logit_diff']:.3g}, argmax agreement {eq['argmax_agreement']:.3f}"
            )
        if snap:
            parts.append(f"curve on snapshots vs between steps: max |diff| {snap['max_abs_diff']:.3g}")
        if doc.get("errors"):
            parts.append("errors: " + "; ".join(doc["errors"]))
        notes.append(f"- {name}: " + "; ".join(parts))
    return "\n".join(lines) + "\n\n" + "\n".join(notes)


def _floor_note(doc: dict[str, Any]) -> str:
    """The chip rate this run's ratios are against: measured on its machine, or (runs before it was) the H200's."""
    chip = doc.get("chip_flops")
    if chip:
        return f"floor: half of {chip['flops'] / 1e12:.0f} TFLOP/s {chip['dtype']} ({chip['source']})"
    return f"floor: half of {doc.get('chip_bf16_flops', 790e12) / 1e12:.0f} TFLOP/s bf16 (the H200's, not measured)"


def validate_table(results: Path) -> str:
    runs = _runs(results, "validate")
    if not runs:
        return "_no validation committed_"
    lines = [
        "| run | scenario | original / retrain training (s) | clean accuracy original / retrain | attack | "
        "reference measurements (s) | warm audits: wall s (verdicts) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, doc in runs:
        audits: dict[str, list[str]] = {}
        for a in doc.get("audits", []):
            short = {"passed": "P", "failed": "F", "skipped": "s"}
            verdicts = " ".join(
                f"{t['check'].split('_')[0]}:{short.get(t['outcome'], t['outcome'])}"
                + (f" {t['duration_s']:.0f}s" if (t.get("duration_s") or 0) >= 1 else "")
                for t in a.get("tests", [])
            )
            audits.setdefault(a["scenario"], []).append(
                f"{a['method']} {_num(a.get('wall_seconds'), '.0f')} ({verdicts})"
            )
        for scenario, f in doc.get("fixtures", {}).items():
            t, acc = f.get("train_seconds", {}), f.get("test_accuracy", {})
            lines.append(
                f"| {name} | {scenario} | {_num(t.get('original'), '.1f')} / {_num(t.get('retrain'), '.1f')} | "
                f"{_num(acc.get('original'), '.3f')} / {_num(acc.get('retrain'), '.3f')} | "
                f"{'effective' if f.get('attack_effective') else 'not effective'} | "
                f"{_num(f.get('reference_seconds'), '.1f')} | "
                f"{'; '.join(audits.get(scenario, [])) or '—'} |"
            )
    return "\n".join(lines)


def sweep_table(results: Path) -> str:
    runs = _runs(results, "sweep")
    if not runs:
        return "_no recipe sweep committed_"
    lines = [
        "| run | variant | test accuracy (flip TTA) | GUS z (>= 5 needed) | model s (first epoch s, then s/epoch) |",
        "|---|---|---|---|---|",
    ]
    for name, doc in runs:
        for row in doc.get("rows", []):
            lines.append(
                f"| {name} | {row['variant']} | {_num(row['test_accuracy'], '.2%')} "
                f"({_num(row['tta_flip_accuracy'], '.2%')}) | {_num(row['gus_z'], '.1f')} | "
                f"{_num(row['seconds'], '.1f')} ({_num(row['first_epoch_seconds'], '.1f')}, "
                f"{_num(row['epoch_seconds'], '.2f')}) |"
            )
        for skipped in doc.get("skipped", []):
            lines.append(f"| {name} | {skipped['variant']} | skipped: {skipped['why']} | | |")
        for error in doc.get("errors", []):
            lines.append(f"| {name} | {error['variant']} | failed: {error['error'][:200]} | | |")
    return "\n".join(lines)


def render_table(results: Path) -> str:
    """The whole generated block (without the markers)."""
    return (
        "Per loop (`python benchmarks/bench_cifar.py --loops`; random CIFAR-shaped data, ResNet-18 width 64; "
        "ms per step and per model, achieved TFLOP/s from counted FLOPs, and the ratio to the floor, "
        "ResNet-18 at half the chip's dense matrix rate, given per run below):\n\n"
        + loops_table(results)
        + "\n\nOn the real CIFAR-10 (`benchmarks/gpu_validate.py`, seed 0; verdicts: P passed, F failed, s skipped, "
        "with each check's seconds where it took one or more; budget's include starting the worker and unlearn()):\n\n"
        + validate_table(results)
        + "\n\nTraining variants (`benchmarks/recipe_sweep.py`: the `gaussian` scenario's poisoned original, seed 0, "
        "real CIFAR-10; test accuracy on the checks' 9,000 images):\n\n" + sweep_table(results)
    )
