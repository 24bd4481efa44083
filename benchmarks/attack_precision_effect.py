"""What `[attack] precision = "bf16"` changes in the attacks it applies to, measured on CPU profiles (not a test).

    python benchmarks/attack_precision_effect.py --profile tiny --seeds 0 1 2 3 4 5 6 7 \
        --json benchmarks/results/cpu-tiny-2026-12-06-attack-precision.json

Witches' Brew and Gradient Canceling optimise their poisons through double-backward steps, the most expensive
loops of a GPU build. `[attack] precision = "bf16"` runs those loops (the surrogates' and the GradPC target's
forward passes) in bfloat16 autocast on CUDA; gradients, cosines, the canceling norm and the poisons stay fp32.
This script builds each fixture twice from the same seed, once with the attack's loops in fp32 and once in bf16
(forced on the CPU: `build_once(force_precision=True)`), everything else (the victims' training, the
validation) in fp32, and compares the pairs:

- Gradient Canceling: the canceling objective reached (as a fraction of its start), the poisoned original's
  test-accuracy drop against retrain, and whether validation found the attack effective;
- Witches' Brew: the alignment loss each target's brew reached, and how many targets the poisoned original
  flipped while retrain got them right (the validated targets; `reference_models` is cut to 1 here, since
  validation does not use them).

Same seed, same base images, same initial perturbations: a paired difference is the numerics' effect alone.
On a CPU, bf16 autocast is emulated and slow; the timings here say nothing about a GPU (`loop_bench.py` times both).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

SCENARIOS = ("gradient_canceling", "gradient_canceling_low", "witches_brew")


def build_pair(profile: str, scenario: str, seed: int) -> dict[str, Any]:
    """The fixture of `seed` built with the attack in fp32 and in bf16: what each attack's validation found."""
    from unlearn_audit.scenarios.build import build_once
    from unlearn_audit.scenarios.recipes import load_profile_recipes

    recipe = load_profile_recipes(profile)[scenario]
    out: dict[str, Any] = {"scenario": scenario, "seed": seed}
    for precision in ("fp32", "bf16"):
        attack = {**recipe.attack, "precision": precision}
        if attack["kind"] == "witches_brew":
            attack["reference_models"] = 1  # the null population is not part of validation
        t0 = time.perf_counter()
        built = build_once(dataclasses.replace(recipe, attack=attack), seed, force_precision=True)
        seconds = time.perf_counter() - t0
        validation, meta = built.meta["validation"], built.meta.get("attack", {})
        assert meta.get("numerics", "").startswith(precision), meta.get("numerics")
        row: dict[str, Any] = {"effective": bool(validation.get("effective", True)), "build_seconds": round(seconds, 1)}
        if attack["kind"] == "gradient_canceling":
            row.update(
                accuracy_drop=validation["accuracy_drop"],
                objective_ratio=meta["objective_final"] / meta["objective_initial"],
                objective_vs_clean_only=meta["objective_final"] / meta["objective_clean_only"],
            )
        else:
            row.update(
                validated_targets=int(validation["validated_targets"]),
                original_attack_success=validation["original_attack_success"],
                alignment_losses=meta["alignment_losses"],
            )
        out[precision] = row
    return out


def paired(values: list[float]) -> dict[str, float]:
    """Mean of paired differences (bf16 - fp32) with its standard error."""
    n = len(values)
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": round(mean, 5), "stderr": round(se, 5), "n": n}


def summarise(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for scenario in sorted({p["scenario"] for p in pairs}):
        rows = [p for p in pairs if p["scenario"] == scenario]
        s: dict[str, Any] = {
            "seeds": [p["seed"] for p in rows],
            "effective": {prec: sum(p[prec]["effective"] for p in rows) for prec in ("fp32", "bf16")},
        }
        if "accuracy_drop" in rows[0]["fp32"]:
            s["accuracy_drop"] = {
                prec: round(statistics.fmean(p[prec]["accuracy_drop"] for p in rows), 4) for prec in ("fp32", "bf16")
            }
            s["accuracy_drop_difference"] = paired(
                [p["bf16"]["accuracy_drop"] - p["fp32"]["accuracy_drop"] for p in rows]
            )
            s["log_objective_ratio_difference"] = paired(
                [math.log(p["bf16"]["objective_ratio"] / p["fp32"]["objective_ratio"]) for p in rows]
            )
        else:
            s["validated_targets"] = {
                prec: sum(p[prec]["validated_targets"] for p in rows) for prec in ("fp32", "bf16")
            }
            s["alignment_loss_difference"] = paired(
                [b - f for p in rows for f, b in zip(p["fp32"]["alignment_losses"], p["bf16"]["alignment_losses"])]
            )
            s["alignment_loss_fp32_mean"] = round(
                statistics.fmean(v for p in rows for v in p["fp32"]["alignment_losses"]), 5
            )
        summary[scenario] = s
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny", help="a CPU profile, e.g. tiny or cifar10-resnet18-standin")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--json", type=Path, help="also write the pairs and their summary here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    pairs = []
    for scenario in args.scenarios:
        for seed in args.seeds:
            pair = build_pair(args.profile, scenario, seed)
            pairs.append(pair)
            print(json.dumps(pair), flush=True)
    summary = summarise(pairs)
    print(json.dumps(summary, indent=2))
    if args.json:
        doc = {
            "benchmark": "attack_precision_effect",
            "profile": args.profile,
            "device": "cpu",
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"),
            "pairs": pairs,
            "summary": summary,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
