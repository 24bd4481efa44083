"""Selective Synaptic Dampening: shrink the parameters that matter far more to the forget set."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.methods._common import union_batches
from unlearn_audit.protocol import UnlearningRequest


def diagonal_fisher(model: nn.Module, batches, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Mean over mini-batches of the squared mini-batch gradient of the cross-entropy (as SSD's code)."""
    importance = [torch.zeros_like(p) for p in params]
    count = 0
    for x, y in batches:
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, allow_unused=True)
        for imp, g in zip(importance, grads):
            if g is not None:
                imp.add_(g.square())
        count += 1
    return [imp / max(count, 1) for imp in importance]


@dataclass
class SSD:
    """SSD (Foster et al. 2024, "Fast Machine Unlearning Without Retraining Through Selective Synaptic Dampening").

    The paper: estimate each parameter's importance as the diagonal of the Fisher information,
    once on the forget set ([]_Df) and once on the full training data ([]_D); every parameter with
    []_Df > `alpha` * []_D is multiplied by min(`lam` * []_D / []_Df, 1); nothing is trained.
    Defaults `alpha` = 10 (selection weighting) and `lam` = 1 (dampening constant), the paper's
    values for its ResNet-18 / CIFAR experiments.

    Here, as in the authors' code: importances are the squared mini-batch gradients of the mean
    cross-entropy (with the labels as given), averaged over mini-batches of the recipe's batch size,
    computed in eval mode. The full training data is forget + retain; when one pass over both and a
    pass over the forget set exceed `budget_use` of the budget (not on `tiny`: they cost 1.1 epochs
    of the 3 allowed), the full data is a random sample drawn with `request.generator` that fits, and
    if the forget set alone takes more than half the budget it is subsampled to half. Only
    parameters are dampened (batch-norm running statistics stay). With an empty forget set, or a
    budget under two examples, the model is returned unchanged.
    """

    alpha: float = 10.0
    lam: float = 1.0
    batch_size: int | None = None
    budget_use: float = 1.0

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module:
        limit = int(self.budget_use * request.budget.example_gradients)
        nf, nr = len(request.forget), len(request.retain)
        if nf == 0 or limit < 2:
            return model.eval()
        n_forget = min(nf, max(1, limit // 2)) if nf + (nf + nr) > limit else nf
        n_full = min(nf + nr, limit - n_forget)
        batch = self.batch_size or request.recipe.batch_size
        model.to(request.device).eval()
        params: list[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]

        forget_order = torch.randperm(nf, generator=request.generator)[:n_forget]
        full_order = torch.randperm(nf + nr, generator=request.generator)[:n_full]
        forget_imp = diagonal_fisher(model, union_batches(request, forget_order, batch), params)
        full_imp = diagonal_fisher(model, union_batches(request, full_order, batch), params)

        with torch.no_grad():
            for p, f_imp, d_imp in zip(params, forget_imp, full_imp):
                selected = f_imp > self.alpha * d_imp
                factor = (self.lam * d_imp / f_imp.clamp_min(torch.finfo(f_imp.dtype).tiny)).clamp(max=1.0)
                p.mul_(torch.where(selected, factor, torch.ones_like(factor)))
        return model.eval()
