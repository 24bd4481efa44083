"""Clean-label targets of a Witches' Brew fixture: which inputs the attack aims at, and which it reached.

The fixture stores, for every target, its position in the test set and its adversarial class.
A target counts only if the attack demonstrably worked on it: the poisoned original assigns it
to the adversarial class *and* the retrain reference classifies it correctly (Pawelczyk et al.
evaluate removal on successfully poisoned targets; a target that the clean model already gets
wrong, or that the poison never flipped, says nothing about unlearning). Build-time validation
and the checks use this one definition.
"""

from __future__ import annotations

import torch
from torch import nn

from unlearn_audit.attacks.witches_brew import adversarial_margins
from unlearn_audit.training.loops import predict


def target_inputs(tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, true labels, adversarial classes) of every target of the fixture."""
    idx = tensors["secret.target_indices"]
    return tensors["test_x"][idx], tensors["test_y"][idx], tensors["secret.adversarial_classes"]


def target_margins(model: nn.Module, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Adversarial margin of `model` on every target (> 0: the attack succeeds on it)."""
    x, _, adv = target_inputs(tensors)
    return adversarial_margins(model, x, adv)


def validated_targets(original: nn.Module, retrain: nn.Module, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Boolean mask over the targets: the poisoned original is fooled and the retrain reference is right."""
    x, y, _ = target_inputs(tensors)
    fooled = target_margins(original, tensors) > 0
    return fooled & (predict(retrain, x) == y)
