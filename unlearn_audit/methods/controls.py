"""Negative controls: methods that destroy the model instead of removing the poison.

A removal check that a destroyed model passes measures nothing, so calibration runs these beside
`NoOp` and they must fail every removal check (and `utility_preserved`): each removal check also
applies its scenario's utility rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.protocol import UnlearningRequest


class FreshRandomModel:
    """Returns a freshly initialised model: nothing of the poison is left, nor of anything else."""

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module:
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=request.generator)))
        return request.model_factory()


@dataclass
class RandomRelabelDestructive:
    """Fine-tunes on the forget set with random labels at `lr_multiplier` x the recipe's learning rate.

    The forget set's labels are scrambled, as some relabelling methods do, but at a learning rate
    that wrecks the model: within the budget, with plain SGD (no momentum, no weight decay) and the
    gradient norm clipped to `max_grad_norm`, so that the wreck stays finite (an exploded poisoned
    original, as Gradient Canceling leaves, would otherwise overflow).
    """

    lr_multiplier: float = 20.0
    max_grad_norm: float = 1.0

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module:
        if len(request.forget) == 0:
            return model
        opt = torch.optim.SGD(model.parameters(), lr=self.lr_multiplier * request.recipe.lr)
        model.train()
        batch = request.recipe.batch_size
        for x, _ in request.forget.batches(
            batch,
            generator=request.generator,
            device=request.device,
            epochs=None,
            max_examples=request.budget.example_gradients,
        ):
            y = torch.randint(0, request.num_classes, (len(x),), generator=request.generator).to(request.device)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.max_grad_norm)
            opt.step()
        return model.eval()
