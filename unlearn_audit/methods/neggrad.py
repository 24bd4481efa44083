"""NegGrad+: descend on the retain set and ascend on the forget set, jointly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import nn

from unlearn_audit.methods._common import Spend, epoch_batches
from unlearn_audit.protocol import UnlearningRequest


@dataclass
class NegGradPlus:
    """NegGrad+ (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning"; Pawelczyk et al. App. A.2.7).

    The paper: fine-tune the original model on both sets, minimising
    `alpha * CE(retain) - (1 - alpha) * CE(forget)`; Pawelczyk et al. use "similar hyperparameters
    as GD and GA" with a stated strength (lost from our copy of the text). Kurmanji et al.'s code
    pairs every retain mini-batch with the next mini-batch of an endlessly cycled forget loader.

    Here: that loop, with `alpha` = 0.999 (Kurmanji et al.'s NegGrad+ setting), the recipe's
    optimizer at `lr_scale` (1.0, as GD) times its rate, retain batches of the recipe's batch size
    and forget batches of `forget_batch_size` (default: the same). Each step forwards both batches
    (separately, so batch-norm statistics are not mixed), which costs both sizes in example-gradients;
    it stops before the step that would exceed `budget_use` of the budget (about 1.6 passes over
    the retain set on `tiny`). An empty forget set reduces it to `alpha`-scaled GD.
    """

    alpha: float = 0.999
    lr_scale: float = 1.0
    forget_batch_size: int | None = None
    budget_use: float = 1.0

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module:
        recipe, retain = request.recipe, request.retain
        spend = Spend(int(self.budget_use * request.budget.example_gradients))
        if len(retain) == 0 and len(request.forget) == 0:
            return model.eval()
        model.to(request.device).train()
        optimizer = recipe.make_optimizer(model.parameters(), lr=recipe.lr * self.lr_scale)
        forget_stream = epoch_batches(request.forget, self.forget_batch_size or recipe.batch_size, request)
        retain_stream = epoch_batches(retain, recipe.batch_size, request)
        while True:
            xr, yr = next(retain_stream, (None, None))
            xf, yf = next(forget_stream, (None, None))
            n = (0 if yr is None else len(yr)) + (0 if yf is None else len(yf))
            if n == 0 or not spend.fits(n):
                break
            optimizer.zero_grad(set_to_none=True)
            loss: Any = 0.0  # a tensor once a term is added
            if yr is not None:
                loss = self.alpha * F.cross_entropy(model(xr), yr)
            if yf is not None:
                loss = loss - (1.0 - self.alpha) * F.cross_entropy(model(xf), yf)
            loss.backward()
            optimizer.step()
            spend.add(n)
        return model.eval()
