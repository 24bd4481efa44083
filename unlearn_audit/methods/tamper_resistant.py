"""Tamper-resistant unlearning through weight-space regularisation (Siddiqui et al. 2025).

Siddiqui et al. ("From Dormant to Deleted", arXiv 2505.22310, NeurIPS 2025) find that forgotten
knowledge returns under fine-tuning when the unlearned model stays close to the original (small L2
distance, no loss barrier on the straight path between them), and propose methods that move the
model away from the original on purpose: Weight Distortion, Weight Dist Reg and CBFT (their
adaptation of Lubana et al.'s connectivity-based fine-tuning). The authors' code
(github.com/shoaibahmed/vision_relearning) was read for the facts the paper's text leaves out; the
implementations here are our own, on this package's protocol: the recipe's optimizer, the request's
budget as the harness counts it, randomness from `request.generator` only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..protocol import Budget, UnlearningRequest
from ._common import Spend, device_generator, epoch_batches


def _retain_steps(model: nn.Module, request: UnlearningRequest, spend: Spend, lr_scale: float, regulariser: Any = None) -> None:
    """Fine-tune on the retain set with the recipe's optimizer (at `lr_scale` times its rate) until the
    budget is spent, the last batch cut short; `regulariser()`, if given, is added to every step's loss
    (it must not forward examples)."""
    recipe = request.recipe
    if spend.left <= 0 or len(request.retain) == 0:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = recipe.make_optimizer(params, lr=recipe.lr * lr_scale)
    model.train()
    for x, y in epoch_batches(request.retain, recipe.batch_size, request):
        if spend.left <= 0:
            break
        if len(y) > spend.left:
            x, y = x[: spend.left], y[: spend.left]
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        if regulariser is not None:
            loss = loss + regulariser()
        loss.backward()
        optimizer.step()
        spend.add(len(y))


def _initial_safeguard(model: nn.Module, request: UnlearningRequest, safeguard: Any, share: float, spend: Spend) -> nn.Module:
    """Run a first-phase unlearner within `share` of the budget (charged in full, whatever it spends)."""
    limit = min(spend.left, int(share * spend.limit))
    sub = dataclasses.replace(request, budget=Budget(request.budget.fraction * limit / max(1, request.budget.example_gradients), limit))
    model = safeguard.unlearn(model, sub).to(request.device)
    spend.add(limit)
    return model


@dataclass
class WeightDistortion:
    """Weight Distortion (Siddiqui et al. 2025, Sec. 5): add Gaussian noise to the weights, then fine-tune on the retain set.

    DRAFT
    """

    std: float = 0.02
    relative: bool = False
    lr_scale: float = 1.0
    budget_use: float = 1.0

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module:
        model.to(request.device)
        gen = device_generator(request)
        with torch.no_grad():
            for p in model.parameters():
                if not p.requires_grad:
                    continue
                scale = self.std
                if self.relative:
                    scale = self.std * float(p.detach().double().pow(2).mean().sqrt())
                p.add_(torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype), alpha=scale)
        _retain_steps(model, request, Spend(int(self.budget_use * request.budget.example_gradients)), self.lr_scale)
        return model.eval()


@dataclass
class WeightDistReg:
    """Weight Dist Reg (Siddiqui et al. 2025, Sec. 5): fine-tune on the retain set while maximising the distance to the original weights.

    DRAFT
    """

    alpha: float = 100.0
    lr_scale: float = 1.0
    budget_use: float = 1.0
    initial_safeguard: Any = None
    safeguard_share: float = 0.5
    eps: float = 1e-8

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module:
        model.to(request.device)
        spend = Spend(int(self.budget_use * request.budget.example_gradients))
        original = [p.detach().clone() for p in model.parameters() if p.requires_grad]
        if self.initial_safeguard is not None:
            model = _initial_safeguard(model, request, self.initial_safeguard, self.safeguard_share, spend)
        params = [p for p in model.parameters() if p.requires_grad]
        count = sum(p.numel() for p in params)

        def regulariser() -> torch.Tensor:
            sq = sum((p - p0).pow(2).sum() for p, p0 in zip(params, original))
            return -self.alpha * torch.sqrt(sq / count + self.eps)

        _retain_steps(model, request, spend, self.lr_scale, regulariser)
        return model.eval()


@dataclass
class CBFT:
    """Connectivity-based fine-tuning (Lubana et al. 2023), as adapted by Siddiqui et al. 2025 (Sec. 5).

    DRAFT
    """

    alpha: float = 0.1
    bound: float = 50.0
    mix: float | tuple[float, float] = 0.5
    forget_batch_size: int | None = None
    barrier_on_retain: bool = True
    lr_scale: float = 1.0
    budget_use: float = 1.0
    initial_safeguard: Any = None
    safeguard_share: float = 0.5

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module:
        recipe = request.recipe
        model.to(request.device)
        spend = Spend(int(self.budget_use * request.budget.example_gradients))
        start_params = {n: p.detach().clone() for n, p in model.named_parameters()}
        start_buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
        if self.initial_safeguard is not None:
            model = _initial_safeguard(model, request, self.initial_safeguard, self.safeguard_share, spend)
        if len(request.retain) == 0 and len(request.forget) == 0:
            return model.eval()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = recipe.make_optimizer(params, lr=recipe.lr * self.lr_scale)
        retain_stream = epoch_batches(request.retain, recipe.batch_size, request)
        forget_stream = epoch_batches(request.forget, self.forget_batch_size or recipe.batch_size, request)
        model.train()
        while True:
            xr, yr = next(retain_stream, (None, None))
            xf, yf = next(forget_stream, (None, None))
            nr = 0 if yr is None else len(yr)
            nf = 0 if yf is None else len(yf)
            barrier_x = [x for x in ((xr if self.barrier_on_retain else None), xf) if x is not None]
            barrier_y = [y for y in ((yr if self.barrier_on_retain else None), yf) if y is not None]
            cost = nr + sum(len(y) for y in barrier_y)
            if cost == 0 or not spend.fits(cost):
                break
            t = self._draw_mix(request)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xr), yr) if yr is not None else torch.zeros((), device=request.device)
            if barrier_y:
                state = {}
                for n, p in model.named_parameters():
                    state[n] = torch.lerp(start_params[n], p, t)
                for n, b in model.named_buffers():
                    state[n] = torch.lerp(start_buffers[n], b.detach(), t) if b.is_floating_point() else b.detach().clone()
                logits = torch.func.functional_call(model, state, (torch.cat(barrier_x),))
                mid_loss = F.cross_entropy(logits, torch.cat(barrier_y))
                loss = loss - self.alpha * torch.clamp(mid_loss, max=self.bound)
            loss.backward()
            optimizer.step()
            spend.add(cost)
        return model.eval()

    def _draw_mix(self, request: UnlearningRequest) -> float:
        if isinstance(self.mix, (int, float)):
            return float(self.mix)
        low, high = self.mix
        return float(low + (high - low) * torch.rand((), generator=request.generator))


__all__ = ["CBFT", "WeightDistReg", "WeightDistortion"]
