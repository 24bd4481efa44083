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

from .attacks import apply_trigger, make_backdoor, make_gaussian_poison
from .data import load_split
from .metrics import correct, gaussian_unlearning_scores, hits_target
from .models import model_factory
from .protocol import ExampleSet
from .recipes import ScenarioRecipe
from .stats import unit_normal_mean_test
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
        "clean_train_x": split.train_x.contiguous(),
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
    }
    return BuiltFixture({"original": original.state_dict(), "retrain": retrain.state_dict()}, tensors, meta)


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
    elif kind == "backdoor":
        a = recipe.attack
        mask = test_y != a["target_class"]
        triggered = apply_trigger(test_x[mask], a["patch_size"], a["patch_value"])
        success = hits_target(original, triggered, a["target_class"]).float().mean().item()
        needed = recipe.options("targeted_removed").get("min_original_success", 0.5)
        report.update(original_attack_success=success, effective=bool(success >= needed), rule=f"original attack success >= {needed}")
    return report
