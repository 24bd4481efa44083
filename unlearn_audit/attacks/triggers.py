"""Trigger attacks: a trigger on some training inputs relabelled to a target class (dirty label).

A trigger attack (the image patch `backdoor`, the text `trigger_word`, a third party's blended
image) is judged on the held-out test inputs of the non-target classes with the trigger applied;
attack success is the fraction the model assigns to the target class. A new trigger attack
subclasses `TriggerAttack` and says how to poison and how to apply its trigger to test inputs;
the validation, the poison metric and `targeted_removed`'s evidence come with the base class.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from unlearn_audit.attacks.base import Attack, Memo, PoisonMeasurement, no_memo
from unlearn_audit.metrics import hits_target
from unlearn_audit.stats import Proportion

if TYPE_CHECKING:
    from torch import nn

    from unlearn_audit.scenarios.fixture import Fixture


class TriggerAttack(Attack):
    """Base of the dirty-label trigger attacks; the recipe's `[attack]` has `target_class`."""

    poison_name = "attack success"
    checks = ("targeted_removed", "relearning_resistant", "not_mode_connected", "utility_preserved", "budget_respected")
    targeted_reference = "retrain"

    @abstractmethod
    def apply_trigger(
        self, attack: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], mask: torch.Tensor
    ) -> torch.Tensor:
        """The test inputs `tensors["test_x"][mask]` with the trigger applied."""

    def triggered_test_inputs(self, attack: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The test inputs whose label is not `attack["target_class"]`, with the trigger applied."""
        return self.apply_trigger(attack, tensors, tensors["test_y"] != attack["target_class"])

    def _hits(self, attack: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], model: nn.Module) -> torch.Tensor:
        return hits_target(model, self.triggered_test_inputs(attack, tensors), attack["target_class"])

    def validate(self, recipe, original, retrain, tensors):  # type: ignore[no-untyped-def]
        success = self._hits(recipe.attack, tensors, original).float().mean().item()
        needed = recipe.options("targeted_removed").get("min_original_success", 0.5)
        return {
            "original_attack_success": success,
            "effective": bool(success >= needed),
            "rule": f"original attack success >= {needed}",
            "retrain_attack_success": self._hits(recipe.attack, tensors, retrain).float().mean().item(),
        }

    def targeted_hits(self, fixture: Fixture, model: nn.Module) -> torch.Tensor:
        """Per-input attack success on the triggered held-out test inputs of the non-target classes."""
        return self._hits(fixture.recipe.attack, fixture.tensors, model)

    def measure_poison(self, fixture, model, held_out=None, memo: Memo = no_memo) -> PoisonMeasurement:  # type: ignore[no-untyped-def]
        hits = self.targeted_hits(fixture, model)
        p = Proportion(int(hits.sum()), len(hits))
        return PoisonMeasurement(p.value, p.stderr, p.trials, "proportion", p.successes)
