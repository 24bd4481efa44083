"""Dirty-label trigger backdoor: a small patch stamped on some training inputs, relabelled to a target class.

The targeted poison of the `tiny` profile (Pawelczyk et al. use Witches' Brew on CIFAR-10 and a
trigger word on IMDb; a visible patch trigger is the simplest targeted poison that a small model
learns reliably). Attack success is the fraction of triggered held-out inputs of other classes
that the model assigns to the target class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from unlearn_audit.attacks.base import BuildContext, PoisonedTrainingSet
from unlearn_audit.attacks.triggers import TriggerAttack


@dataclass(frozen=True)
class TriggerBackdoor:
    """The attack's secret: poisoned indices, the patch, where it goes, and the target class."""

    indices: torch.Tensor  # long, (k,)
    original_labels: torch.Tensor  # long, (k,): labels before relabelling
    target_class: int
    patch_size: int
    patch_value: float


def apply_trigger(x: torch.Tensor, patch_size: int, patch_value: float) -> torch.Tensor:
    """A copy of images `x` (N x C x H x W) with the square trigger in the bottom-right corner."""
    out = x.clone()
    out[..., -patch_size:, -patch_size:] = patch_value
    return out


def draw_dirty_label_poisons(
    train_y: torch.Tensor, num_poisons: int, target_class: int, generator: torch.Generator
) -> torch.Tensor:
    """Sorted indices of `num_poisons` training examples drawn at random from the classes other than
    `target_class`: the rows a dirty-label trigger attack relabels (patch backdoor and trigger word)."""
    candidates = torch.nonzero(train_y != target_class).flatten()
    if not 0 < num_poisons <= len(candidates):
        raise ValueError(f"num_poisons must be in [1, {len(candidates)}], got {num_poisons}")
    return candidates[torch.randperm(len(candidates), generator=generator)[:num_poisons]].sort().values


def make_backdoor(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_poisons: int,
    target_class: int,
    patch_size: int,
    patch_value: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, TriggerBackdoor]:
    """Return (poisoned inputs, poisoned labels, secret); poisons are drawn from non-target classes."""
    chosen = draw_dirty_label_poisons(train_y, num_poisons, target_class, generator)
    x, y = train_x.clone(), train_y.clone()
    x[chosen] = apply_trigger(x[chosen], patch_size, patch_value)
    original = y[chosen].clone()
    y[chosen] = target_class
    return x, y, TriggerBackdoor(chosen, original, int(target_class), int(patch_size), float(patch_value))


class BackdoorAttack(TriggerAttack):
    """`kind = "backdoor"`: a `patch_size` square of `patch_value` on `num_poisons` inputs of other classes,
    relabelled to `target_class`."""

    kind = "backdoor"

    def poison(self, ctx: BuildContext) -> PoisonedTrainingSet:
        a = ctx.recipe.attack
        train_x, train_y, backdoor = make_backdoor(
            ctx.split.train_x,
            ctx.split.train_y,
            a["num_poisons"],
            a["target_class"],
            a["patch_size"],
            a["patch_value"],
            ctx.generator,
        )
        return PoisonedTrainingSet(
            train_x, train_y, backdoor.indices, ctx.split.train_x, secret={"original_labels": backdoor.original_labels}
        )

    def apply_trigger(
        self, attack: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], mask: torch.Tensor
    ) -> torch.Tensor:
        return apply_trigger(tensors["test_x"][mask], attack["patch_size"], attack["patch_value"])
