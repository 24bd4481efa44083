"""Build one scenario fixture: poison -> train the original -> retrain without the poisons.

This is steps 1-2 of the protocol of Pawelczyk et al.; the unlearner (step 3) and the checks
(step 4) run later against the cached result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .attacks import TRIGGER_ATTACKS, gradient_canceling_attack, make_backdoor, make_gaussian_poison, triggered_test_inputs
from .attacks.trigger_word import trigger_word_poison
from .data import load_split
from .metrics import correct, gaussian_unlearning_scores, hits_target
from .models import model_factory
from .protocol import ExampleSet
from .recipes import ScenarioRecipe
from .stats import Proportion, excess_test, unit_normal_mean_test
from .training import seeded_model, train

ProgressCallback = Callable[[str, int, int, float], None]
"""(stage, epochs done, epochs total, seconds elapsed) during a build."""


def derived_seed(seed: int, purpose: str) -> int:
    """Independent, reproducible seeds for the parts of a fixture (and for the unlearner)."""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


@dataclass
class BuiltFixture:
    """What a build produces: weights, tensors and metadata (JSON-able)."""

    weights: dict[str, dict[str, torch.Tensor]]  # "original" / "retrain" -> state dict
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)


def build_scenario(recipe: ScenarioRecipe, seed: int, progress: ProgressCallback | None = None) -> BuiltFixture:
    split = load_split(recipe.data["source"], **{k: v for k, v in recipe.data.items() if k != "source"})
    attack_gen = torch.Generator().manual_seed(derived_seed(seed, "attack"))
    kind = recipe.attack["kind"]
    secret: dict[str, torch.Tensor] = {}
    clean_train_x = split.train_x  # the inputs before poisoning, row for row with train_x
    extra_weights: dict[str, dict[str, torch.Tensor]] = {}
    extra_meta: dict[str, Any] = {}
    if kind == "gaussian":
        train_x, poison = make_gaussian_poison(
            split.train_x, recipe.attack["num_poisons"], recipe.attack["sigma"], attack_gen
        )
        train_y = split.train_y.clone()
        forget = poison.indices
        secret["noise"] = poison.noise
    elif kind == "backdoor":
        a = recipe.attack
        train_x, train_y, backdoor = make_backdoor(
            split.train_x, split.train_y, a["num_poisons"], a["target_class"], a["patch_size"], a["patch_value"], attack_gen
        )
        forget = backdoor.indices
        secret["original_labels"] = backdoor.original_labels
    elif kind == "trigger_word":
        train_x, train_y, forget, tw_secret = trigger_word_poison(recipe.attack, split, attack_gen)
        secret.update(tw_secret)
    elif kind == "gradient_canceling":
        gc = _gradient_canceling(recipe, split, seed, attack_gen, progress)
        train_x, train_y, clean_train_x, forget = gc["train_x"], gc["train_y"], gc["clean_train_x"], gc["forget"]
        secret.update(gc["secret"])
        extra_weights["target"] = gc["target"]
        extra_meta["attack"] = gc["meta"]
    else:
        raise ValueError(f"unknown attack kind {kind!r} in recipe {recipe.profile}/{recipe.name}")

    factory = model_factory(recipe.model, tuple(split.train_x.shape[1:]), split.num_classes)
    keep = torch.ones(len(train_y), dtype=torch.bool)
    keep[forget] = False
    timings: dict[str, float] = {}

    def fit(stage: str, data: ExampleSet) -> nn.Module:
        t0 = time.perf_counter()
        model = seeded_model(factory, derived_seed(seed, f"{stage}-init"))
        cb = (lambda e, n, s: progress(stage, e, n, s)) if progress else None
        train(model, data, recipe.training, generator=torch.Generator().manual_seed(derived_seed(seed, f"{stage}-order")), on_epoch=cb)
        timings[stage] = time.perf_counter() - t0
        return model

    # The retrain reference starts from its own fresh initialisation (DESIGN.md: retrain from the
    # same initialisation stays nearly mode-connected to the original, which is not the gold standard).
    original = fit("original", ExampleSet(train_x, train_y))
    retrain = fit("retrain", ExampleSet(train_x[keep], train_y[keep]))

    tensors = {
        "train_x": train_x.contiguous(),
        "train_y": train_y.contiguous(),
        "clean_train_x": clean_train_x.contiguous(),
        "test_x": split.test_x.contiguous(),
        "test_y": split.test_y.contiguous(),
        "forget_indices": forget.contiguous(),
        **{f"secret.{k}": v.contiguous() for k, v in secret.items()},
    }
    meta: dict[str, Any] = {
        "num_classes": split.num_classes,
        "input_shape": list(split.train_x.shape[1:]),
        "train_seconds": timings,
        "validation": validate_attack(recipe, original, retrain, tensors),
        **extra_meta,
    }
    weights = {"original": original.state_dict(), "retrain": retrain.state_dict(), **extra_weights}
    return BuiltFixture(weights, tensors, meta)


def _gradient_canceling(
    recipe: ScenarioRecipe, split: Any, seed: int, generator: torch.Generator, progress: ProgressCallback | None
) -> dict[str, Any]:
    """Gradient Canceling (Pawelczyk et al. A.1.3): the attacker trains its own clean model, and
    `gradient_canceling_attack` turns it into a GradPC target and poisons that cancel the gradient there.

    The poisons are appended to the clean training set and are the forget set; `clean_train_x`
    holds, for poison rows, the training images the poisons started from.
    """
    a = recipe.attack
    n = len(split.train_y)
    factory = model_factory(recipe.model, tuple(split.train_x.shape[1:]), split.num_classes)
    t0 = time.perf_counter()
    clean = seeded_model(factory, derived_seed(seed, "attacker-init"))
    train(clean, ExampleSet(split.train_x, split.train_y), recipe.training,
          generator=torch.Generator().manual_seed(derived_seed(seed, "attacker-order")),
          on_epoch=(lambda e, total, s: progress("attacker's clean", e, total, s)) if progress else None)
    clean_seconds = time.perf_counter() - t0
    attack = gradient_canceling_attack(
        clean, split.train_x, split.train_y, max(1, round(float(a["poison_fraction"]) * n)), float(a["radius"]), generator,
        gradpc_steps=int(a.get("gradpc_steps", 20)), canceling_steps=int(a.get("canceling_steps", 1000)),
        lr=float(a.get("canceling_lr", 0.1)), weight_decay=float(recipe.training.weight_decay), on_stage=progress,
    )
    k = len(attack.poison_y)
    meta = {
        "attacker_clean_test_accuracy": correct(clean, split.test_x, split.test_y).float().mean().item(),
        "target_test_accuracy": correct(attack.target, split.test_x, split.test_y).float().mean().item(),
        **attack.diagnostics,
    }
    meta["seconds"]["attacker_clean"] = clean_seconds
    return {
        "train_x": torch.cat([split.train_x, attack.poison_x]),
        "train_y": torch.cat([split.train_y, attack.poison_y]),
        "clean_train_x": torch.cat([split.train_x, attack.secret.base_inputs]),
        "forget": torch.arange(n, n + k),
        "secret": {"base_indices": attack.secret.base_indices},
        "target": {name: v.detach().clone() for name, v in attack.target.state_dict().items()},
        "meta": meta,
    }


def validate_attack(
    recipe: ScenarioRecipe, original: nn.Module, retrain: nn.Module, tensors: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """Did the attack work on the poisoned original? A fixture whose attack failed cannot judge anything."""
    test_x, test_y = tensors["test_x"], tensors["test_y"]
    report: dict[str, Any] = {
        "original_test_accuracy": correct(original, test_x, test_y).float().mean().item(),
        "retrain_test_accuracy": correct(retrain, test_x, test_y).float().mean().item(),
    }
    kind = recipe.attack["kind"]
    if kind == "gaussian":
        idx = tensors["forget_indices"]
        scores = gaussian_unlearning_scores(original, tensors["clean_train_x"][idx], tensors["train_y"][idx], tensors["secret.noise"])
        z = unit_normal_mean_test(scores[~scores.isnan()].tolist(), alpha=0.01).z
        needed = recipe.options("gaussian_leakage").get("min_original_z", 5.0)
        report.update(original_gus_z=z, effective=bool(z >= needed), rule=f"original GUS z >= {needed}")
    elif kind in TRIGGER_ATTACKS:
        a = recipe.attack
        triggered = triggered_test_inputs(a, tensors)
        success = hits_target(original, triggered, a["target_class"]).float().mean().item()
        needed = recipe.options("targeted_removed").get("min_original_success", 0.5)
        report.update(original_attack_success=success, effective=bool(success >= needed), rule=f"original attack success >= {needed}")
        report["retrain_attack_success"] = hits_target(retrain, triggered, a["target_class"]).float().mean().item()
    elif kind == "gradient_canceling":
        opts = recipe.options("indiscriminate_restored")
        needed = float(opts.get("min_accuracy_drop", 0.10))
        margin, alpha = float(opts.get("margin", 0.05)), float(opts.get("alpha", 0.01))
        acc = {name: Proportion(int(correct(m, test_x, test_y).sum()), len(test_y))
               for name, m in (("original", original), ("retrain", retrain))}
        drop = excess_test(acc["retrain"], acc["original"], margin, alpha)  # the check's rule, applied to the original
        # Unbounded poisons can make training diverge; a non-finite original cannot stand for anything.
        finite = all(bool(torch.isfinite(p).all()) for p in original.parameters())
        norms = {name: sum(float(p.detach().double().pow(2).sum()) for p in m.parameters()) ** 0.5
                 for name, m in (("original", original), ("retrain", retrain))}
        report.update(
            accuracy_drop=drop.difference,
            accuracy_drop_lower_bound=drop.lower_bound,
            original_parameter_norm=norms["original"],
            retrain_parameter_norm=norms["retrain"],
            effective=bool(finite and drop.difference >= needed and drop.rejected),
            rule=(f"the poisoned original is finite, its test accuracy is >= {needed:g} below retrain's and it fails "
                  f"indiscriminate_restored (gap lower bound > {margin:g} at alpha={alpha:g})"),
        )
    return report
