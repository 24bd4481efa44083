"""What each `cifar10-resnet18` scenario's build should take, from the loop timings of one machine (not a test).

    python benchmarks/build_estimate.py benchmarks/results/gpu-h200-2026-12-04-run2-loops.json
    python benchmarks/build_estimate.py LOOPS.json --json estimates.json

A fixture build is a sum of loops that `bench_cifar.py --loops` times one by one: model trainings (the fast
trainer), the attack's own loop (Witches' Brew brewing; Gradient Canceling's GradPC passes and canceling
steps), and the reference measurements that the build stores (the relearning attack on the original and
retrain, its evaluations, the interpolation path). This script multiplies each measured loop by the number
of times the scenario's recipe runs it, so a GPU slot can be planned before it starts and a scenario that
cannot fit its bound (4 minutes on one H200) is known before a slot is spent on it.

The attack loops are timed in both `[attack] precision`s (fp32, the papers' numerics, and bf16): each
scenario is estimated with its recipe's, and, where the file timed both, with the other one too ("attack in
bf16" or "in fp32"), so that a slot can choose. Where a loops file has no timing of an attack loop in a
precision (files older than those lines), its seconds come from its FLOPs (counted on the CPU with
torch.utils.flop_counter) at two rates the file did measure: the fast trainer's (optimistic: bf16, large
batches) and the fp32 eager relearning step's (pessimistic: fp32, launch-bound). Those rows say "assumed".
Not counted: data loading, process start-up, accuracy evaluations of the validation (seconds each), and, for
Witches' Brew, the low-margin fallback (when the random target fails validation: the surrogate, original,
retrain and brew again).

Models a recipe shares across seeds (Witches' Brew's `shared_references`) are trained by the first seed's build
only: the table gives every later seed's build and, apart, what the first build adds.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

SCENARIO_BOUND_S = 240.0  # every scenario, reference measurements included, on one H200
ATTACK_LOOPS = ("Witches' Brew step", "Gradient Canceling step", "full-gradient pass")


def _row(doc: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    """The first measured line whose name starts with `prefix`."""
    for row in doc.get("loops", []):
        if row["loop"].startswith(prefix):
            return row
    return None


def _line_precision(row: dict[str, Any]) -> str:
    """The `[attack] precision` an attack line timed (older files: only their bf16 line said so, by name)."""
    return str(row.get("attack_precision", "bf16" if "bf16 autocast" in row["loop"] else "fp32"))


def _attack_row(doc: dict[str, Any], prefix: str, precision: str) -> dict[str, Any] | None:
    for row in doc.get("loops", []):
        if row["loop"].startswith(prefix) and _line_precision(row) == precision:
            return row
    return None


def _attack_rates(doc: dict[str, Any], precision: str = "fp32") -> dict[str, tuple[float, float, str]]:
    """Seconds of one brew step, one canceling step and one full-gradient pass in `precision`: (low, high, source).

    A measured line gives low == high. A loop the file did not time in `precision` gets its FLOPs (at the
    profile's sizes) over the trainer's (bf16) and the fp32 relearning step's achieved rates, for either
    precision: a bracket, not a measurement of either."""
    measured = {}
    for key, prefix in zip(("brew_step", "canceling_step", "full_pass"), ATTACK_LOOPS):
        row = _attack_row(doc, prefix, precision)
        if row is not None:
            seconds = row["seconds"] / row["steps"]
            measured[key] = (seconds, seconds, "measured")
    if len(measured) == len(ATTACK_LOOPS):
        return measured
    from loop_bench import CIFAR10_TRAIN_IMAGES, attack_poisons, attack_step_flops

    per_poison = attack_step_flops(int(doc.get("width", 64)))
    fast = _row(doc, "fast trainer (per epoch")
    slow = _row(doc, "relearning, fp32 eager")
    if fast is None or slow is None:
        raise SystemExit("the loops file has neither the attack loops nor the trainer and fp32 relearning lines")
    rates = (fast["tflops"] * 1e12, slow["tflops"] * 1e12)
    brew_poisons, canceling_poisons = attack_poisons()
    flops = {
        "brew_step": per_poison["brew"] * brew_poisons,
        "canceling_step": per_poison["canceling"] * canceling_poisons,
        "full_pass": doc["flops_per_image"]["train"] * CIFAR10_TRAIN_IMAGES,
    }
    source = "assumed: counted FLOPs at the trainer's and the fp32 relearning step's measured TFLOP/s"
    return {key: measured.get(key, (f / rates[0], f / rates[1], source)) for key, f in flops.items()}


def estimate(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Per scenario: trainings, attack loop and reference measurements in seconds (low, high), and the bound."""
    from loop_bench import CIFAR10_TRAIN_IMAGES

    from unlearn_audit.scenarios.recipes import load_profile_recipes
    from unlearn_audit.training.relearning import attack_from_options

    trainer = _row(doc, "fast trainer (per epoch")
    if trainer is None:
        raise SystemExit("the loops file has no fast-trainer line")
    relearn = (
        _row(doc, "relearning, 6 runs at once")
        or _row(doc, "relearning, 3 sizes at once, graphed")
        or _row(doc, "relearning, recipe numerics, graphed")
        or _row(doc, "relearning")
    )
    path = _row(doc, "interpolation path")
    gus = _row(doc, "GUS of")
    accuracy = _row(doc, "accuracy on")
    rates = {precision: _attack_rates(doc, precision) for precision in ("fp32", "bf16")}
    out = []
    for name, recipe in load_profile_recipes("cifar10-resnet18").items():
        t, a = recipe.training, recipe.attack
        model_s = trainer["first_epoch_s"] + (t.epochs - 1) * trainer["seconds"]
        models, shared = 2, 0
        if a["kind"] == "witches_brew":
            reference_models = int(a.get("reference_models", 0))
            shared = reference_models if a.get("shared_references", False) else 0
            models += int(a.get("surrogates", 1)) + reference_models - shared
        models += 1 if a["kind"] == "gradient_canceling" else 0  # the attacker's clean model
        precision = str(a.get("precision", "fp32"))
        if precision not in rates:
            raise SystemExit(f"{name}: unknown [attack] precision {precision!r}")
        (low, high), source = _attack_seconds(a, rates[precision])
        other = "bf16" if precision == "fp32" else "fp32"
        loop = "brew_step" if a["kind"] == "witches_brew" else "canceling_step"
        measured_other = rates[other][loop][2] == "measured"
        alternative = _attack_seconds(a, rates[other])[0] if source and measured_other else None
        references = 0.0
        if "relearning_resistant" in recipe.checks and relearn:
            options = recipe.options("relearning_resistant")
            sizes = len(options.get("sizes", [0, 10, 100]))
            run = attack_from_options(options, t, CIFAR10_TRAIN_IMAGES - 1000)  # the retain set, about
            evaluation = (gus if a["kind"] == "gaussian" else accuracy) or {"seconds": 0.0}
            per_model = relearn["seconds"] / relearn["steps"] * run.steps * sizes  # a line's seconds are per model
            references += 2 * (per_model + sizes * math.ceil(run.steps / run.eval_every) * evaluation["seconds"])
        if "not_mode_connected" in recipe.checks and path:
            references += path["seconds"]
        training_s = models * model_s
        total = (training_s + low + references, training_s + high + references)
        out.append(
            {
                "scenario": name,
                "models": models,
                "shared_models": shared,
                "first_build_extra_s": round(shared * model_s, 1),
                "training_s": round(training_s, 1),
                "attack_s": [round(low, 1), round(high, 1)],
                "attack_source": source,
                "attack_precision": precision if source else None,
                **(
                    {f"attack_s_{other}": [round(v, 1) for v in alternative]}
                    | {f"total_s_{other}": [round(training_s + v + references, 1) for v in alternative]}
                    if alternative
                    else {}
                ),
                "references_s": round(references, 1),
                "total_s": [round(total[0], 1), round(total[1], 1)],
                "bound_s": SCENARIO_BOUND_S,
                "fits": "yes" if total[1] <= SCENARIO_BOUND_S else "no" if total[0] > SCENARIO_BOUND_S else "maybe",
            }
        )
    return out


def _attack_seconds(
    a: dict[str, Any], rates: dict[str, tuple[float, float, str]]
) -> tuple[tuple[float, float], str | None]:
    """(low, high) seconds of the recipe's attack loop at `rates`, and where the rates came from (None: no loop)."""
    if a["kind"] not in ("witches_brew", "gradient_canceling"):
        return (0.0, 0.0), None
    if a["kind"] == "witches_brew":
        b_low, b_high, source = rates["brew_step"]
        steps = (int(a["steps"]) + 1) * int(a["restarts"])
        return (b_low * steps, b_high * steps), source
    c_low, c_high, source = rates["canceling_step"]
    p_low, p_high, _ = rates["full_pass"]
    passes, steps = int(a["gradpc_steps"]) + 1, int(a["canceling_steps"]) + 1
    return (p_low * passes + c_low * steps, p_high * passes + c_high * steps), source


def _span(pair: list[float]) -> str:
    return f"{pair[0]:.0f}" if pair[0] == pair[1] else f"{pair[0]:.0f}-{pair[1]:.0f}"


def render(rows: list[dict[str, Any]], doc: dict[str, Any]) -> str:
    device = doc.get("gpu") or doc.get("device", "?")
    lines = [
        f"Estimated build of each cifar10-resnet18 scenario on {device} ({doc.get('date', 'undated')} loops), seconds:",
        f"{'scenario':<24} {'models':>6} {'training':>9} {'attack':>10} {'references':>11} {'total':>10}  "
        f"fits {SCENARIO_BOUND_S:.0f} s  first build adds",
    ]
    for r in rows:
        extra = f"{r['shared_models']} shared models, {r['first_build_extra_s']:.0f} s" if r["shared_models"] else ""
        for other in ("bf16", "fp32"):
            if f"total_s_{other}" in r:
                alternative = (
                    f"attack in {other}: {_span(r[f'attack_s_{other}'])} s, total {_span(r[f'total_s_{other}'])}"
                )
                extra = f"{extra}; {alternative}" if extra else alternative
        lines.append(
            f"{r['scenario']:<24} {r['models']:>6} {r['training_s']:>9.0f} {_span(r['attack_s']):>10} "
            f"{r['references_s']:>11.0f} {_span(r['total_s']):>10}  {r['fits']:<10}{extra}".rstrip()
        )
    sources = sorted({f"{r['attack_precision']}, {r['attack_source']}" for r in rows if r["attack_source"]})
    lines += [f"attack loops: {s}" for s in sources]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("loops", help="a loops JSON written by bench_cifar.py --loops")
    parser.add_argument("--json", default=None, help="also write the estimates here")
    args = parser.parse_args()
    doc = json.loads(Path(args.loops).read_text())
    if doc.get("kind", "loops") != "loops":
        raise SystemExit(f"{args.loops} is not a loops file (kind {doc.get('kind')!r})")
    rows = estimate(doc)
    print(render(rows, doc))
    if args.json:
        Path(args.json).write_text(json.dumps({"from": args.loops, "estimates": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
