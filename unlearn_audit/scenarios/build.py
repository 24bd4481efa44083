"""Build one scenario fixture: poison -> train the original -> retrain without the poisons.

This is steps 1-2 of the protocol of Pawelczyk et al.; the unlearner (step 3) and the checks
(step 4) run later against the cached result.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from unlearn_audit.attacks.base import BuildContext
from unlearn_audit.attacks.registry import get_attack
from unlearn_audit.metrics import correct
from unlearn_audit.profiles.data import load_split
from unlearn_audit.profiles.models import model_factory
from unlearn_audit.profiles.split import Split
from unlearn_audit.protocol import ExampleSet
from unlearn_audit.scenarios.recipes import ScenarioRecipe, clean_model_name
from unlearn_audit.scenarios.seeds import derived_seed
from unlearn_audit.scenarios.shared_models import SHARED_SEED, SharedModelRecord, SharedModelStore
from unlearn_audit.training.loops import seeded_model, train
from unlearn_audit.training.numerics import evaluating_fixture_of

ProgressCallback = Callable[[str, int, int, float], None]
"""(stage, epochs done, epochs total, seconds elapsed) during a build."""


def train_seeded(
    factory: Callable[[], nn.Module],
    data: ExampleSet,
    recipe: ScenarioRecipe,
    seed: int,
    name: str,
    label: str,
    progress: ProgressCallback | None,
    device: torch.device | str,
) -> nn.Module:
    """A model of the fixture, trained from scratch with the recipe: its initialisation and batch order come
    from `derived_seed(seed, f"{name}-init")` and `f"{name}-order"`; progress is reported under `label`."""
    model = seeded_model(factory, derived_seed(seed, f"{name}-init"))
    train(
        model,
        data,
        recipe.training,
        generator=torch.Generator().manual_seed(derived_seed(seed, f"{name}-order")),
        on_epoch=(lambda e, n, s, **kw: progress(label, e, n, s, **kw)) if progress else None,
        device=device,
    )
    return model


@dataclass
class BuiltFixture:
    """What a build produces: weights, tensors and metadata (JSON-able)."""

    weights: dict[str, dict[str, torch.Tensor]]  # "original" / "retrain" / "clean1".. -> state dict
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)


def build_seed(seed: int, attempt: int) -> int:
    """The seed the `attempt`-th build (0-based) of audit seed `seed`'s fixture draws its randomness from.

    The first build uses the audit seed itself (so fixtures that validate at once are what they always were);
    later ones a seed derived from it, never another audit seed's (`seed + 1` would rebuild seed 1's fixture,
    and a pooled run over seeds 0-1 would count one fixture twice)."""
    return seed if attempt == 0 else derived_seed(seed, f"rebuild-{attempt}")


def build_scenario(
    recipe: ScenarioRecipe,
    seed: int,
    progress: ProgressCallback | None = None,
    device: torch.device | str = "cpu",
    shared: SharedModelStore | None = None,
) -> BuiltFixture:
    """The fixture of audit seed `seed`: built, and built again from the next build seed while its attack fails
    validation, at most `recipe.build_attempts` times. meta["build_seed"] says which build it is, and
    meta["build_attempts"] what each failed build's validation found; when none validates, the last build is
    kept (its tests xfail, naming the attempts). Models the attack shares across seeds come from `shared` (the
    fixture cache's store; default: kept in memory for this call, so the attempts of one build share them)."""
    shared = shared if shared is not None else SharedModelStore(None)
    attempts: list[dict[str, Any]] = []
    for attempt in range(recipe.build_attempts):
        used = build_seed(seed, attempt)
        labelled = progress
        if attempt > 0 and progress is not None:
            labelled = lambda stage, *a, _n=attempt, **kw: progress(  # noqa: E731
                f"build {_n + 1} of {recipe.build_attempts}: {stage}", *a, **kw
            )
        built = build_once(recipe, used, labelled, device, shared)
        attempts.append(
            {"build_seed": used, "validation": built.meta["validation"], "train_seconds": built.meta["train_seconds"]}
        )
        if built.meta["validation"].get("effective", True):
            break
    built.meta["build_seed"] = used
    if len(attempts) > 1:
        built.meta["build_attempts"] = attempts
    return built


def build_once(
    recipe: ScenarioRecipe,
    seed: int,
    progress: ProgressCallback | None = None,
    device: torch.device | str = "cpu",
    shared: SharedModelStore | None = None,
    *,
    force_precision: bool = False,
) -> BuiltFixture:
    """One build from `seed`; models train on `device` (the GPU profile passes the audit device), results are portable.

    When the attack did not work and the attack names a fallback recipe (`Attack.fallback`), the fixture is
    built again from that recipe with the same seed, and meta["fallback"] records why and the first attempt.
    The shared models it used are listed in meta["shared_models"] (key, checksum, trained here or read).
    `force_precision` runs an `[attack] precision = "bf16"` attack's loops in bf16 on a CPU too
    (`BuildContext.attack_numerics`): for CPU measurements of that path, never for a cached fixture.
    """
    shared = shared if shared is not None else SharedModelStore(None)
    split, validation = fixture_split(recipe, seed)
    attack = get_attack(recipe.attack["kind"])
    factory = model_factory(recipe.model, tuple(split.train_x.shape[1:]), split.num_classes)
    timings: dict[str, float] = {}
    peak_memory: dict[str, int] = {}
    shared_used: list[SharedModelRecord] = []

    def shared_model(name: str, label: str) -> nn.Module:
        whole = ExampleSet(split.train_x, split.train_y)
        state, record = shared.get_or_train(
            recipe, name, lambda: train_seeded(factory, whole, recipe, SHARED_SEED, name, label, progress, device)
        )
        shared_used.append(record)
        if record.trained_seconds is not None:
            timings[f"shared {name}"] = record.trained_seconds
        model = factory()
        model.load_state_dict(state)  # the stored weights, also when trained just now: every seed sees one model
        return model.to(device)

    ctx = BuildContext(
        recipe=recipe,
        split=split,
        seed=seed,
        device=device,
        progress=progress,
        model_factory=factory,
        generator=torch.Generator().manual_seed(derived_seed(seed, "attack")),
        train=lambda data, name, label: train_seeded(factory, data, recipe, seed, name, label, progress, device),
        shared_model=shared_model,
        force_precision=force_precision,
    )
    poisoned = attack.poison(ctx)
    train_x, train_y, forget = poisoned.train_x, poisoned.train_y, poisoned.forget
    keep = torch.ones(len(train_y), dtype=torch.bool)
    keep[forget] = False

    def fit(stage: str, data: ExampleSet) -> nn.Module:
        t0 = time.perf_counter()
        if torch.device(device).type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        model = train_seeded(factory, data, recipe, seed, stage, f"{stage} model", progress, device)
        timings[stage] = time.perf_counter() - t0
        if torch.device(device).type == "cuda":
            peak_memory[stage] = int(torch.cuda.max_memory_allocated(device))
        return model

    # The retrain reference starts from its own fresh initialisation: retrain from the same initialisation
    # stays nearly mode-connected to the original (measured on tiny), which is not the gold standard.
    original = fit("original", ExampleSet(train_x, train_y))
    retrain = fit("retrain", ExampleSet(train_x[keep], train_y[keep]))
    # More models trained like retrain from their own seeds: how much clean models differ from each other.
    clean = [fit(f"clean {j + 1}", ExampleSet(train_x[keep], train_y[keep])) for j in range(recipe.clean_models)]
    tensors = {
        "train_x": train_x.contiguous(),
        "train_y": train_y.contiguous(),
        "clean_train_x": poisoned.clean_train_x.contiguous(),
        "test_x": split.test_x.contiguous(),
        "test_y": split.test_y.contiguous(),
        "forget_indices": forget.contiguous(),
        **{f"secret.{k}": v.contiguous() for k, v in poisoned.secret.items()},
    }
    if validation is not None:
        tensors.update(validation_x=validation[0].contiguous(), validation_y=validation[1].contiguous())
    # Attack-specific models trained like retrain (Witches' Brew's clean references): only their outputs are kept.
    tensors.update(
        {f"secret.{k}": v.contiguous() for k, v in attack.after_training(ctx, poisoned, fit, tensors).items()}
    )
    meta: dict[str, Any] = {
        "num_classes": split.num_classes,
        "input_shape": list(split.train_x.shape[1:]),
        "train_seconds": timings,
        **({"peak_gpu_memory_bytes": peak_memory} if peak_memory else {}),
        **({"shared_models": [r.as_meta() for r in shared_used]} if shared_used else {}),
        "validation": validate_attack(recipe, original, retrain, tensors),
        **({"attack": poisoned.meta} if poisoned.meta else {}),
    }
    fallback = attack.fallback(recipe, meta["validation"])
    if fallback is not None:  # e.g. Witches' Brew: random targets failed validation, low-margin ones instead
        retry, reason = fallback
        built = build_once(retry, seed, progress, device, shared, force_precision=force_precision)
        built.meta["fallback"] = {
            "reason": reason,
            "attack": retry.attack,
            "first_attempt": {
                "validation": meta["validation"],
                "attack": meta.get("attack", {}),
                "train_seconds": timings,
                **({"shared_models": meta["shared_models"]} if "shared_models" in meta else {}),
            },
        }
        return built
    weights = {
        "original": original.state_dict(),
        "retrain": retrain.state_dict(),
        **poisoned.extra_weights,
        **{clean_model_name(j): m.state_dict() for j, m in enumerate(clean)},
    }
    return BuiltFixture(weights, tensors, meta)


def fixture_split(recipe: ScenarioRecipe, seed: int) -> tuple[Split, tuple[torch.Tensor, torch.Tensor] | None]:
    """The clean data a build from `seed` starts from: the recipe's split, less its held-out validation set."""
    data_options = {k: v for k, v in recipe.data.items() if k not in ("source", "validation_fraction")}
    return hold_out_validation(
        load_split(recipe.data["source"], **data_options),
        float(recipe.data.get("validation_fraction", 0.0)),
        derived_seed(seed, "validation"),
    )


def hold_out_validation(
    split: Split, fraction: float, seed: int
) -> tuple[Split, tuple[torch.Tensor, torch.Tensor] | None]:
    """Move a seeded random `fraction` of the test split into a validation set that unlearners receive
    (`request.validation`) and no check evaluates on. 0 (the default): no validation set."""
    if fraction == 0:
        return split, None
    if not 0 < fraction < 1:
        raise ValueError(f"[data] validation_fraction must be in [0, 1), got {fraction}")
    order = torch.randperm(len(split.test_y), generator=torch.Generator().manual_seed(seed))
    k = max(1, round(fraction * len(order)))
    held, kept = order[:k].sort().values, order[k:].sort().values
    rest = dataclasses.replace(split, test_x=split.test_x[kept], test_y=split.test_y[kept])
    return rest, (split.test_x[held], split.test_y[held])


def validate_attack(
    recipe: ScenarioRecipe, original: nn.Module, retrain: nn.Module, tensors: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """Did the attack work on the poisoned original? A fixture whose attack failed cannot judge anything.

    Measured under the recipe's evaluation numerics, as the checks measure."""
    test_x, test_y = tensors["test_x"], tensors["test_y"]
    with evaluating_fixture_of(recipe.training):
        report: dict[str, Any] = {
            "original_test_accuracy": correct(original, test_x, test_y).float().mean().item(),
            "retrain_test_accuracy": correct(retrain, test_x, test_y).float().mean().item(),
        }
        report.update(get_attack(recipe.attack["kind"]).validate(recipe, original, retrain, tensors))
    return report
