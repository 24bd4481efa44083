"""What sharing Witches' Brew's null models across seeds changes, measured on `tiny` (CPU, about 90 s a seed).

    python benchmarks/shared_null_effect.py --seeds 0 1 2 3 4 5 6 7 --json benchmarks/results/cpu-tiny-shared-null.json

`[attack] shared_references = true` trains the clean models of `targeted_removed`'s null once, on the whole
clean training set, instead of for every seed without that seed's poisons. A shared model has therefore seen
the clean originals of the poisons, all of them images of the intended class: on `cifar10-resnet18` 750 of
its 5,000 (15%). This script builds `tiny`'s `witches_brew` fixture (whose null is trained without the
poisons), trains the same null models again from the same initialisations on the whole clean set, and
compares, target by target, the soft attack success (sigmoid of the adversarial margin) of the two nulls:
the mean paired difference in units of the per-seed null's standard deviation, against the share of the
target's intended class that the fixture's poisons took out (15% to 50% on `tiny`, whose ten targets
often share a class). A positive shift is a null that sits higher: a more lenient test.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch


def measure_seed(seed: int) -> dict[str, Any]:
    from unlearn_audit.attacks.witches_brew import adversarial_margins, validated_targets
    from unlearn_audit.profiles.models import model_factory
    from unlearn_audit.protocol import ExampleSet
    from unlearn_audit.scenarios.build import build_scenario, train_seeded
    from unlearn_audit.scenarios.recipes import load_profile_recipes

    recipe = load_profile_recipes("tiny")["witches_brew"]
    assert not recipe.attack.get("shared_references", False), "tiny's null is the per-seed one this compares with"
    built = build_scenario(recipe, seed)
    t = built.tensors
    factory = model_factory(recipe.model, tuple(built.meta["input_shape"]), built.meta["num_classes"])
    models = {}
    for name in ("original", "retrain"):
        models[name] = factory()
        models[name].load_state_dict(built.weights[name])
    x, adversarial = t["test_x"][t["secret.target_indices"]], t["secret.adversarial_classes"]
    whole = ExampleSet(t["clean_train_x"], t["train_y"])
    # The fixture's own null models are seeded by (seed, "reference j"): the same initialisations, other data.
    shared_like = torch.stack(
        [
            adversarial_margins(
                train_seeded(factory, whole, recipe, seed, f"reference {j + 1}", "", None, "cpu"), x, adversarial
            )
            for j in range(int(recipe.attack["reference_models"]))
        ]
    )
    y, forget = t["train_y"], t["forget_indices"]
    return {
        "seed": seed,
        "validated": validated_targets(models["original"], models["retrain"], t).tolist(),
        "adversarial_classes": adversarial.tolist(),
        "removed_share": [float((y[forget] == int(c)).sum() / (y == int(c)).sum()) for c in adversarial],
        "null_without_poisons": t["secret.reference_margins"].tolist(),
        "null_whole_clean_set": shared_like.tolist(),
    }


def summarise(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per target: the paired shift of the null's mean soft success, in the per-seed null's SDs."""
    shares, shifts, validated = [], [], []
    for s in seeds:
        minus = torch.sigmoid(torch.tensor(s["null_without_poisons"]))
        whole = torch.sigmoid(torch.tensor(s["null_whole_clean_set"]))
        for t in range(minus.shape[1]):
            shifts.append(float((whole[:, t] - minus[:, t]).mean() / minus[:, t].std(unbiased=True)))
            shares.append(s["removed_share"][t])
            validated.append(bool(s["validated"][t]))

    def group(keep: list[bool]) -> dict[str, Any]:
        values = [v for v, k in zip(shifts, keep) if k]
        n = len(values)
        mean = sum(values) / n if n else float("nan")
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
        share = sum(s for s, k in zip(shares, keep) if k) / n if n else float("nan")
        return {
            "targets": n,
            "mean_removed_share": share,
            "shift_null_sds": mean,
            "stderr": sd / math.sqrt(n) if n else None,
        }

    return {
        "all_targets": group([True] * len(shifts)),
        "validated_targets": group(validated),
        "class_share_at_most_20pct": group([s <= 0.2 for s in shares]),
        "class_share_above_20pct": group([s > 0.2 for s in shares]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5, 6, 7])
    parser.add_argument("--json", default=None, help="write the per-target data and the summary here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    seeds = []
    for seed in args.seeds:
        seeds.append(measure_seed(seed))
        print(f"seed {seed}: done ({time.perf_counter() - started:.0f} s)", flush=True)
    summary = summarise(seeds)
    for name, g in summary.items():
        print(
            f"{name:<28} {g['targets']:>3} targets, intended class {g['mean_removed_share']:.0%} removed: "
            f"null shift {g['shift_null_sds']:+.2f} ± {g['stderr']:.2f} null SDs"
        )
    if args.json:
        doc = {
            "kind": "shared_null_effect",
            "profile": "tiny",
            "date": time.strftime("%Y-%m-%d"),
            "torch": torch.__version__,
            "summary": summary,
            "seeds": seeds,
        }
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
