"""What `[attack] precision = "bf16"` changes in the attacks it applies to, measured on CPU profiles (not a test).

    python benchmarks/attack_precision_effect.py --profile tiny --seeds 0 1 2 3 4 5 6 7 \
        --json benchmarks/results/cpu-tiny-2026-12-06-attack-precision.json
    python benchmarks/attack_precision_effect.py --direct --profile cifar10-resnet18-standin --seeds 0 1 2 3 \
        --set model.width=8 training.epochs=8 data.signal=0.3 attack.steps=40 attack.restarts=2 \
        attack.canceling_steps=200 --json benchmarks/results/cpu-standin-2026-12-06-attack-precision.json

Witches' Brew and Gradient Canceling optimise their poisons through double-backward steps, the most expensive
loops of a GPU build. `[attack] precision = "bf16"` runs those loops (the surrogates' and the GradPC target's
forward passes) in bfloat16 autocast on CUDA; gradients, cosines, the canceling norm and the poisons stay fp32.
Both modes compare the attack in fp32 and in bf16 (forced on the CPU) from the same seed: same base images,
same initial perturbations, so a paired difference is the numerics' effect alone.

- Builds (the default): each fixture is built twice (`build_once(force_precision=True)`), everything but the
  attack's loops (the victims' training, the validation) in fp32. Gradient Canceling: the canceling objective
  reached (as a fraction of its start), the poisoned original's test-accuracy drop against retrain, whether
  validation found the attack effective. Witches' Brew: the alignment loss each target's brew reached, and
  the validated targets (fooled on the poisoned original, right on retrain; `reference_models` is cut to 1,
  since validation does not use them).
- `--direct`: the optimisation alone, on the profile's architecture (a ResNet-18 on the stand-in): one
  surrogate trained per seed, then, per seed, one brew for each of `--targets` test images (a class other
  than their own, the recipe's brew settings) and one GradPC target with its canceling poisons, in fp32 and
  in bf16. A brew whose poisons have no gradient at all (loss 1.0 in both: an over-confident stand-in model)
  is reported and left out of the differences.

On a CPU, bf16 autocast is emulated and slow; the timings here say nothing about a GPU (`loop_bench.py` times
both precisions there).
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
SECTIONS = ("attack", "model", "data", "training")


def overridden(recipe: Any, settings: dict[str, dict[str, Any]]) -> Any:
    """`recipe` with `settings[section][key]` replaced; `[attack]` keys only where its attack has them."""
    attack = {k: v for k, v in settings.get("attack", {}).items() if k in recipe.attack}
    return dataclasses.replace(
        recipe,
        attack={**recipe.attack, **attack},
        model={**recipe.model, **settings.get("model", {})},
        data={**recipe.data, **settings.get("data", {})},
        training=dataclasses.replace(recipe.training, **settings.get("training", {})),
    )


def build_pair(recipe: Any, seed: int) -> dict[str, Any]:
    """The fixture of `seed` built with the attack in fp32 and in bf16: what each attack's validation found."""
    from unlearn_audit.scenarios.build import build_once

    out: dict[str, Any] = {"scenario": recipe.name, "seed": seed}
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


def direct_pair(recipes: dict[str, Any], seed: int, targets: int) -> dict[str, Any]:
    """The attacks' optimisation alone, fp32 against bf16, on one surrogate trained from `seed`."""
    import torch

    from unlearn_audit.attacks.gradient_canceling import gradpc, make_gradient_canceling
    from unlearn_audit.attacks.witches_brew import brew_poisons
    from unlearn_audit.metrics import correct
    from unlearn_audit.profiles.models import model_factory
    from unlearn_audit.protocol import ExampleSet
    from unlearn_audit.scenarios.build import fixture_split, train_seeded
    from unlearn_audit.training.numerics import LoopNumerics

    brew, canceling = recipes["witches_brew"], recipes["gradient_canceling"]
    split, _ = fixture_split(brew, seed)
    factory = model_factory(brew.model, tuple(split.train_x.shape[1:]), split.num_classes)
    model = train_seeded(factory, ExampleSet(split.train_x, split.train_y), brew, seed, "surrogate-0", "", None, "cpu")
    model.eval()
    numerics = {
        p: LoopNumerics.of(dataclasses.replace(brew.training, precision=p), "cpu", force_precision=True)
        for p in ("fp32", "bf16")
    }
    a = brew.attack
    k = max(1, round(float(a["budget"]) * len(split.train_y)))
    out: dict[str, Any] = {
        "seed": seed,
        "surrogate_test_accuracy": float(correct(model, split.test_x, split.test_y).float().mean()),
        "brews": [],
    }
    for t in range(targets):
        cls = (int(split.test_y[t]) + 1 + seed) % split.num_classes
        base = torch.nonzero(split.train_y == cls).flatten()[:k]
        row: dict[str, Any] = {"target": t, "adversarial_class": cls}
        for p, n in numerics.items():
            t0 = time.perf_counter()
            _, info = brew_poisons(
                [model],
                split.train_x[base],
                split.train_y[base],
                split.test_x[t : t + 1],
                torch.tensor([cls]),
                float(a["epsilon"]) / 255,
                int(a["steps"]),
                int(a["restarts"]),
                torch.Generator().manual_seed(seed * 1000 + t),
                lr=float(a.get("lr", 0.1)),
                augmentation=str(a.get("brew_augmentation", "none")),
                numerics=n,
            )
            row[p] = {"start": info["loss_curve"][0], "final": info["final_loss"], "seconds": time.perf_counter() - t0}
        row["degenerate"] = min(row["fp32"]["final"], row["bf16"]["final"]) >= 0.999
        out["brews"].append(row)
    c = canceling.attack
    poisons = max(1, round(float(c["poison_fraction"]) * len(split.train_y)))
    out["canceling"] = {}
    for p, n in numerics.items():
        target = gradpc(model, split.train_x, split.train_y, float(c["radius"]), int(c["gradpc_steps"]), numerics=n)
        _, _, secret = make_gradient_canceling(
            target,
            split.train_x,
            split.train_y,
            poisons,
            torch.Generator().manual_seed(seed),
            steps=int(c["canceling_steps"]),
            lr=float(c.get("canceling_lr", 0.1)),
            weight_decay=float(canceling.training.weight_decay),
            numerics=n,
        )
        out["canceling"][p] = {
            "objective_ratio": secret.objective_final / secret.objective_initial,
            "objective_vs_clean_only": secret.objective_final / secret.clean_objective,
        }
    return out


def paired(values: list[float]) -> dict[str, float]:
    """Mean of paired differences (bf16 - fp32) with its standard error."""
    n = len(values)
    mean = statistics.fmean(values) if n else float("nan")
    se = statistics.stdev(values) / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": round(mean, 5), "stderr": round(se, 5), "n": n}


def summarise_builds(pairs: list[dict[str, Any]]) -> dict[str, Any]:
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


def summarise_direct(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    brews = [b for p in pairs for b in p["brews"]]
    kept = [b for b in brews if not b["degenerate"]]
    return {
        "surrogate_test_accuracy": [round(p["surrogate_test_accuracy"], 3) for p in pairs],
        "brews": len(brews),
        "degenerate_brews": len(brews) - len(kept),
        "alignment_loss_fp32_mean": round(statistics.fmean(b["fp32"]["final"] for b in kept), 5) if kept else None,
        "alignment_loss_difference": paired([b["bf16"]["final"] - b["fp32"]["final"] for b in kept]),
        "canceling_objective_ratio_fp32": [round(p["canceling"]["fp32"]["objective_ratio"], 4) for p in pairs],
        "log_objective_ratio_difference": paired(
            [
                math.log(p["canceling"]["bf16"]["objective_ratio"] / p["canceling"]["fp32"]["objective_ratio"])
                for p in pairs
            ]
        ),
    }


def settings_of(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """SECTION.KEY=VALUE arguments, each VALUE read as TOML (`40`, `0.5`, `"crop_flip"`)."""
    import tomllib

    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        section, dot, key = name.partition(".")
        if not sep or not dot or section not in SECTIONS:
            raise SystemExit(f"expected SECTION.KEY=VALUE with SECTION one of {SECTIONS}, got {pair!r}")
        out.setdefault(section, {})[key] = tomllib.loads(f"v = {value}")["v"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny", help="a CPU profile, e.g. tiny or cifar10-resnet18-standin")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--direct", action="store_true", help="the attacks' optimisation alone, on one surrogate")
    parser.add_argument("--targets", type=int, default=4, help="--direct: brews per seed")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="replace recipe keys (TOML values), e.g. model.width=8 attack.steps=40 (attack keys: where it has them)",
    )
    parser.add_argument("--json", type=Path, help="also write the pairs and their summary here")
    args = parser.parse_args()
    settings = settings_of(args.set)

    import torch

    from unlearn_audit.scenarios.recipes import load_profile_recipes

    recipes = {name: overridden(r, settings) for name, r in load_profile_recipes(args.profile).items()}
    pairs = []
    if args.direct:
        for seed in args.seeds:
            pairs.append(direct_pair(recipes, seed, args.targets))
            print(json.dumps(pairs[-1]), flush=True)
        summary = summarise_direct(pairs)
    else:
        for scenario in args.scenarios:
            for seed in args.seeds:
                pairs.append(build_pair(recipes[scenario], seed))
                print(json.dumps(pairs[-1]), flush=True)
        summary = summarise_builds(pairs)
    print(json.dumps(summary, indent=2))
    if args.json:
        doc = {
            "benchmark": "attack_precision_effect",
            "mode": "direct" if args.direct else "builds",
            "profile": args.profile,
            "settings": settings,
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
