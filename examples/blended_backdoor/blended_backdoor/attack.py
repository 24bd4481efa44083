"""The blended-image backdoor (Chen et al., 2017, "Targeted backdoor attacks on deep learning systems
using data poisoning"): the trigger is a fixed random pattern blended into the whole image,
x' = (1 - blend) * x + blend * pattern, on a few training inputs relabelled to a target class.

Everything unlearn-audit needs from a trigger attack is here: how to poison the training set and
how to put the trigger on held-out test inputs. Validation, the poison metric (attack success),
`targeted_removed`, relearning and the interpolation path come with `TriggerAttack`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from unlearn_audit.attacks.backdoor import draw_dirty_label_poisons
from unlearn_audit.attacks.base import BuildContext, PoisonedTrainingSet
from unlearn_audit.attacks.triggers import TriggerAttack


def blend(x: torch.Tensor, pattern: torch.Tensor, amount: float) -> torch.Tensor:
    return (1 - amount) * x + amount * pattern


class BlendedBackdoor(TriggerAttack):
    """`[attack] kind = "blended_backdoor"`: `num_poisons`, `target_class`, `blend` (0-1)."""

    kind = "blended_backdoor"

    def poison(self, ctx: BuildContext) -> PoisonedTrainingSet:
        a = ctx.recipe.attack
        x, y = ctx.split.train_x.clone(), ctx.split.train_y.clone()
        pattern = torch.rand(x.shape[1:], generator=ctx.generator)  # the secret trigger, one per fixture
        chosen = draw_dirty_label_poisons(y, int(a["num_poisons"]), int(a["target_class"]), ctx.generator)
        x[chosen] = blend(x[chosen], pattern, float(a["blend"]))
        original_labels = y[chosen].clone()
        y[chosen] = int(a["target_class"])
        return PoisonedTrainingSet(
            x, y, chosen, ctx.split.train_x, secret={"pattern": pattern, "original_labels": original_labels}
        )

    def apply_trigger(
        self, attack: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], mask: torch.Tensor
    ) -> torch.Tensor:
        return blend(tensors["test_x"][mask], tensors["secret.pattern"], float(attack["blend"]))
