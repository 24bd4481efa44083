"""The calibration anchors: `NoOp`, `Retrain`, and the simplest approximate methods, GD and GA.

`Retrain` must pass every check and `NoOp` must fail every removal check; `GradientDescent`
and `GradientAscent` are the simplest approximate methods evaluated by Pawelczyk et al.
(App. A.2). Each spends at most `request.budget.example_gradients` (except `Retrain`, the
exempt gold standard) and draws randomness only from `request.generator`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.protocol import UnlearningRequest
from unlearn_audit.training.loops import train


class NoOp:
    """Returns the poisoned model unchanged: the floor every removal check must catch."""

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module:
        return model


class Retrain:
    """Retrains from a fresh initialisation on the retain set with the original recipe.

    Exact unlearning, the gold standard; it spends a full training's compute, so it is exempt
    from the budget check.
    """

    exempt_from_budget = True

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module:
        fresh = request.model_factory()
        return train(fresh, request.retain, request.recipe, generator=request.generator, device=request.device)


@dataclass
class GradientDescent:
    """GD (Pawelczyk et al., App. A.2.1): keep training on the retain set with the original recipe.

    Runs the recipe's optimizer at `lr_scale` times the original learning rate for as many
    example-gradients as the budget allows (`budget_use` of it), i.e. `fraction * epochs` epochs.
    """

    lr_scale: float = 1.0
    budget_use: float = 1.0

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module:
        recipe = request.recipe
        examples = int(self.budget_use * request.budget.example_gradients)
        epochs = -(-examples // max(1, len(request.retain)))
        scaled = dataclasses.replace(recipe, lr=recipe.lr * self.lr_scale)
        return train(
            model,
            request.retain,
            scaled,
            generator=request.generator,
            epochs=epochs,
            max_examples=examples,
            device=request.device,
        )


@dataclass
class GradientAscent:
    """GA (Pawelczyk et al., App. A.2.3; Jang et al. 2022): maximise the loss on the forget set.

    The paper reuses GD's hyperparameters with a smaller learning rate and does not give a
    stopping rule. We choose plain SGD (no momentum) at `lr_scale` times the recipe's rate, for
    up to `max_epochs` passes over the forget set, stopping once the model's accuracy on the
    forget set (as labelled in the request) is at most `stop_forget_accuracy`, within the budget.
    The stopping rule uses only the request's data, never the audit's measurements.
    Expect GA to cost accuracy, as the paper reports.
    """

    lr_scale: float = 0.3
    max_epochs: int = 20
    stop_forget_accuracy: float = 0.1

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module:
        optimizer = torch.optim.SGD(model.parameters(), lr=request.recipe.lr * self.lr_scale)
        budget = request.budget.example_gradients
        spent = 0
        for _ in range(self.max_epochs):
            if forget_accuracy(model, request) <= self.stop_forget_accuracy:
                break
            model.train()
            for x, y in request.forget.batches(
                request.recipe.batch_size, generator=request.generator, device=request.device
            ):
                if spent + len(y) > budget:
                    return model.eval()
                optimizer.zero_grad(set_to_none=True)
                (-F.cross_entropy(model(x), y)).backward()
                optimizer.step()
                spent += len(y)
        return model.eval()


@torch.no_grad()
def forget_accuracy(model: nn.Module, request: UnlearningRequest) -> float:
    """Accuracy on the forget set as labelled in the request (no gradients, so no budget spent)."""
    model.eval()
    x, y = request.forget.inputs.to(request.device), request.forget.labels.to(request.device)
    return float((model(x).argmax(1) == y).float().mean()) if len(y) else 0.0


__all__ = ["GradientAscent", "GradientDescent", "NoOp", "Retrain"]
