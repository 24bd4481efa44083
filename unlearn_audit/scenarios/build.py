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

from unlearn_audit.attacks import (
    TRIGGER_ATTACKS,
    adversarial_margins,
    brew_for_targets,
    gradient_canceling_attack,
    make_backdoor,
    make_gaussian_poison,
    runner_up_classes,
    select_low_margin_targets,
    triggered_test_inputs,
)
from unlearn_audit.attacks.trigger_word import trigger_word_poison
from unlearn_audit.profiles.data import load_split
from unlearn_audit.metrics import correct, gaussian_unlearning_scores, hits_target
from unlearn_audit.profiles.models import model_factory
from unlearn_audit.protocol import ExampleSet
from unlearn_audit.scenarios.recipes import ScenarioRecipe
from unlearn_audit.stats import Proportion, excess_test, unit_normal_mean_test
from unlearn_audit.attacks.targets import target_margins, validated_targets
from unlearn_audit.training.loops import seeded_model, train

ProgressCallback = Callable[[str, int, int, float], None]
"""(stage, epochs done, epochs total, seconds elapsed) during a build."""


def derived_seed(seed: int, purpose: str) -> int:
    """Independent, reproducible seeds for the parts of a fixture (and for the unlearner)."""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


def train_seeded(
    factory: Callable[[], nn.Module], data: ExampleSet, recipe: ScenarioRecipe, seed: int, name: str, label: str,
    progress: ProgressCallback | None, device: torch.device | str,
) -> nn.Module:
    """A model of the fixture, trained from scratch with the recipe: its initialisation and batch order come
    from `derived_seed(seed, f"{name}-init")` and `f"{name}-order"`; progress is reported under `label`."""
    model = seeded_model(factory, derived_seed(seed, f"{name}-init"))
    train(model, data, recipe.training, generator=torch.Generator().manual_seed(derived_seed(seed, f"{name}-order")),
          on_epoch=(lambda e, n, s, **kw: progress(label, e, n, s, **kw)) if progress else None, device=device)
    return model


@dataclass
class BuiltFixture:
    """What a build produces: weights, tensors and metadata (JSON-able)."""

    weights: dict[str, dict[str, torch.Tensor]]  # "original" / "retrain" -> state dict
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)


def build_scenario(recipe: ScenarioRecipe, seed: int, progress: ProgressCallback | None = None,
                   device: torch.device | str = "cpu") -> BuiltFixture:
    """Build the fixture; models train on `device` (the GPU profile passes the audit device), results are portable."""
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
        gc = _gradient_canceling(recipe, split, seed, attack_gen, progress, device)
        train_x, train_y, clean_train_x, forget = gc["train_x"], gc["train_y"], gc["clean_train_x"], gc["forget"]
        secret.update(gc["secret"])
        extra_weights["target"] = gc["target"]
        extra_meta["attack"] = gc["meta"]
    elif kind == "witches_brew":
        wb = _witches_brew(recipe, split, seed, attack_gen, progress, device)
        train_x, forget = wb["train_x"], wb["forget"]
        train_y = split.train_y.clone()
        secret.update(wb["secret"])
        extra_meta["attack"] = wb["meta"]
    else:
        raise ValueError(f"unknown attack kind {kind!r} in recipe {recipe.profile}/{recipe.name}")

    factory = model_factory(recipe.model, tuple(split.train_x.shape[1:]), split.num_classes)
    keep = torch.ones(len(train_y), dtype=torch.bool)
    keep[forget] = False
    timings: dict[str, float] = {}
    peak_memory: dict[str, int] = {}

    def fit(stage: str, data: ExampleSet) -> nn.Module:
        t0 = time.perf_counter()
        if torch.device(device).type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        model = train_seeded(factory, data, recipe, seed, stage, f"{stage} model", progress, device)
        timings[stage] = time.perf_counter() - t0
        if torch.device(device).type == "cuda":
            peak_memory[stage] = int(torch.cuda.max_memory_allocated(device))
        return model

    # The retrain reference starts from its own fresh initialisation (DESIGN.md: retrain from the
    # same initialisation stays nearly mode-connected to the original, which is not the gold standard).
    original = fit("original", ExampleSet(train_x, train_y))
    retrain = fit("retrain", ExampleSet(train_x[keep], train_y[keep]))
    if kind == "witches_brew":
        # More clean models, trained exactly as retrain but from other seeds: the null distribution of
        # the target margins that `targeted_removed` compares a method with. Only their margins are kept.
        references = [fit(f"reference {j + 1}", ExampleSet(train_x[keep], train_y[keep]))
                      for j in range(int(recipe.attack["reference_models"]))]
        target_x = split.test_x[secret["target_indices"]]
        secret["reference_margins"] = torch.stack(
            [adversarial_margins(m, target_x, secret["adversarial_classes"]) for m in references])

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
        **({"peak_gpu_memory_bytes": peak_memory} if peak_memory else {}),
        "validation": validate_attack(recipe, original, retrain, tensors),
        **extra_meta,
    }
    weights = {"original": original.state_dict(), "retrain": retrain.state_dict(), **extra_weights}
    return BuiltFixture(weights, tensors, meta)


def _gradient_canceling(
    recipe: ScenarioRecipe, split: Any, seed: int, generator: torch.Generator, progress: ProgressCallback | None,
    device: torch.device | str = "cpu",
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
    clean = train_seeded(factory, ExampleSet(split.train_x, split.train_y), recipe, seed, "attacker",
                         "attacker's clean model", progress, device)
    clean_seconds = time.perf_counter() - t0
    attack = gradient_canceling_attack(
        clean, split.train_x.to(device), split.train_y.to(device), max(1, round(float(a["poison_fraction"]) * n)), float(a["radius"]), generator,
        gradpc_steps=int(a.get("gradpc_steps", 20)), canceling_steps=int(a.get("canceling_steps", 1000)),
        lr=float(a.get("canceling_lr", 0.1)), weight_decay=float(recipe.training.weight_decay), on_stage=progress,
    )
    k = len(attack.poison_y)
    cpu = {"poison_x": attack.poison_x.cpu(), "poison_y": attack.poison_y.cpu(),
           "base_inputs": attack.secret.base_inputs.cpu(), "base_indices": attack.secret.base_indices.cpu()}
    meta = {
        "attacker_clean_test_accuracy": correct(clean, split.test_x, split.test_y).float().mean().item(),
        "target_test_accuracy": correct(attack.target, split.test_x, split.test_y).float().mean().item(),
        **attack.diagnostics,
    }
    meta["seconds"]["attacker_clean"] = clean_seconds
    return {
        "train_x": torch.cat([split.train_x, cpu["poison_x"]]),
        "train_y": torch.cat([split.train_y, cpu["poison_y"]]),
        "clean_train_x": torch.cat([split.train_x, cpu["base_inputs"]]),
        "forget": torch.arange(n, n + k),
        "secret": {"base_indices": cpu["base_indices"]},
        "target": {name: v.detach().cpu().clone() for name, v in attack.target.state_dict().items()},
        "meta": meta,
    }


def _witches_brew(
    recipe: ScenarioRecipe, split: Any, seed: int, generator: torch.Generator, progress: ProgressCallback | None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Witches' Brew (Geiping et al. 2021; Pawelczyk et al. Sec. 4.1): the attacker trains its own clean
    surrogates, picks the test points they classify correctly with the smallest margin, and brews one
    poison set per target from training images of the target's runner-up class (the adversarial class).

    Poisoned images replace their clean versions in the training set (labels unchanged), so
    `clean_train_x` is the unpoisoned training set and the forget set is every poisoned index.
    """
    a = recipe.attack
    factory = model_factory(recipe.model, tuple(split.train_x.shape[1:]), split.num_classes)
    t0 = time.perf_counter()
    surrogates = [train_seeded(factory, ExampleSet(split.train_x, split.train_y), recipe, seed, f"surrogate-{i}",
                               f"attacker's surrogate model {i + 1}", progress, device)
                  for i in range(int(a["surrogates"]))]
    surrogate_seconds = time.perf_counter() - t0
    num_targets = int(a["num_targets"])
    test_x, test_y = split.test_x.to(device), split.test_y.to(device)
    targets = select_low_margin_targets(surrogates, test_x, test_y, num_targets).cpu()
    adversarial = runner_up_classes(surrogates, test_x[targets], test_y[targets]).cpu()
    t0 = time.perf_counter()
    poisoned_x, brew = brew_for_targets(
        split.train_x.to(device), split.train_y.to(device), surrogates, test_x[targets], targets, adversarial,
        poisons_per_target=max(1, round(float(a["budget"]) * len(split.train_y))),
        epsilon=float(a["epsilon"]) / 255, steps=int(a["steps"]), restarts=int(a["restarts"]), generator=generator,
        lr=float(a.get("lr", 0.1)),
        on_target=(lambda done, total: progress("Witches' Brew poisons, targets", done, total, time.perf_counter() - t0))
        if progress else None,
    )
    poisoned_x = poisoned_x.cpu()
    meta = {
        "alignment_losses": brew.final_losses,
        "poisons": len(brew.indices),
        "max_perturbation": float((poisoned_x - split.train_x).abs().max()),
        "seconds": {"surrogates": surrogate_seconds, "brewing": time.perf_counter() - t0},
    }
    return {
        "train_x": poisoned_x,
        "forget": brew.indices,
        "secret": {
            "target_indices": brew.target_indices,
            "adversarial_classes": brew.adversarial_classes,
            "poison_target": brew.poison_target,
        },
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
    elif kind == "witches_brew":
        needed = max(1, int(recipe.options("targeted_removed").get("min_validated_targets", 3)))
        kept = validated_targets(original, retrain, tensors)
        reference = tensors["secret.reference_margins"] > 0
        report.update(
            targets=len(kept),
            original_attack_success=float((target_margins(original, tensors) > 0).float().mean()),
            retrain_attack_success=float((target_margins(retrain, tensors) > 0).float().mean()),
            reference_attack_success=float(reference.float().mean()),
            validated_targets=int(kept.sum()),
            effective=bool(int(kept.sum()) >= needed),
            rule=f"at least {needed} targets fooled on the poisoned original and classified correctly by retrain",
        )
    return report
