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
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.protocol import Budget, UnlearningRequest
from unlearn_audit.methods._common import Spend, device_generator, epoch_batches


def _retain_steps(model: nn.Module, request: UnlearningRequest, spend: Spend, lr_scale: float,
                  regulariser: Callable[[], torch.Tensor] | None = None) -> None:
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
    fraction = request.budget.fraction * limit / max(1, request.budget.example_gradients)
    sub = dataclasses.replace(request, budget=Budget(fraction, limit))
    model = safeguard.unlearn(model, sub).to(request.device)
    spend.add(limit)
    return model


@dataclass
class WeightDistortion:
    """Weight Distortion (Siddiqui et al. 2025): add Gaussian noise to the weights, then fine-tune on the retain set.

    The paper (and its released code): add i.i.d. N(0, std^2) noise to every parameter of the original
    model -- one absolute `std` for all tensors, 0.02 in the authors' scripts for ResNet-18 on CIFAR-10
    -- then fine-tune on the retain set with cross-entropy (Adam at lr 1e-5, no weight decay, 100
    epochs in the scripts). The forget set is not used at all: the method only moves the model far
    from the original so that the relearning attack has no nearby copy of the forgotten solution to
    fall back to.

    Here: the same noise (drawn from `request.generator`, or a device generator seeded by it) on every
    parameter that requires grad (batch-norm statistics untouched, as in the code); with `relative`,
    each tensor's noise is `std` times that tensor's own RMS instead. Fine-tuning is `GradientDescent`'s
    loop: the recipe's optimizer at `lr_scale` (1.0) times its rate for as many retain examples as
    `budget_use` of the budget allows, the last batch cut short (the paper's 100 Adam epochs at 1e-5
    do not fit a 10% budget). The fine-tuning moves the weights little, so the distance from the
    original is essentially the noise's, std x sqrt(#params). The noise is free (no forward pass),
    so the whole budget goes to fine-tuning.

    `std` = 0.05 (the paper's 0.02 is for another network; the first-layer weights of the `tiny` MLP
    have an RMS of about 0.02, like ResNet-18's) was chosen on retain-set accuracy only, never on
    the audit's scores: each candidate ran on a request whose retain set was 85% of the real one, and
    we measured accuracy on the other 15% of the retain set, on both `tiny` scenarios for fixture
    seeds 0-2 (run seed 7). Of 0.02, 0.03, 0.05, 0.07 and 0.1 it is the largest whose mean held-out
    retain accuracy stays within one point of GD's (0.5 points below; 0.07 costs 1.3, 0.1 costs 3.3).
    It puts the model about 25 in L2 from the original, more than the retrain reference (about 18).
    """

    std: float = 0.05
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
    """Weight Dist Reg (Siddiqui et al. 2025): fine-tune on the retain set while pushing the weights away from the original.

    The paper (and its released code): minimise, per retain mini-batch,
    `CE(retain) - alpha * sqrt(mean_i (theta_i - theta0_i)^2 + 1e-8)`, i.e. maximise the RMS distance
    (the L2 distance normalised by the number of parameters) between the current parameters and the
    original model's, with no upper bound, `alpha` = 1 and Adam at lr 1e-5 for 100 epochs in the
    authors' scripts. The gradient of the distance term has constant norm `alpha / sqrt(#params)` and
    points along the current displacement (it is zero at the start), so the term amplifies whatever
    direction the model has begun to move in. In the released scripts this runs as a second phase,
    on top of an "initial safeguard" (an alternating-SCRUB-unlearned model by default; circuit breakers
    or Weight Distortion in the other runs), with the distance still measured to the original model.

    Here: that loss, with the recipe's optimizer at `lr_scale` (1.0) times its rate, on retain
    batches of the recipe's size until `budget_use` of the budget is spent (the last batch cut
    short); the distance term needs no forward pass and costs nothing. By default it starts from
    the original model (the paper's Fig. 2 lists it among the single methods, though the released
    launcher appears to start it from the alternating-SCRUB model even there); `initial_safeguard` (any
    unlearner, e.g. `GradientAscent()` or `SCRUB()`) runs first, within `safeguard_share` (0.5) of
    the budget, which is charged in full, the second phase getting the rest. With an empty retain
    set there is nothing to fine-tune on and the model is returned as it stands.

    `alpha` = 20 was chosen on retain-set accuracy only, never on the audit's scores (same protocol
    as `WeightDistortion`: held-out 15% of the retain set, both `tiny` scenarios, fixture seeds 0-2):
    of 10, 20, 30 and 50 it is the largest whose mean held-out retain accuracy stays within one
    point of GD's (0.75 points below; 30 costs 1.3, 50 costs 2.8). With SGD the push is weak: the
    model ends only about 1 in L2 from the original (retrain: about 18). The paper's `alpha` = 1 is
    not comparable, because Adam rescales every gradient.
    """

    alpha: float = 20.0
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
    """CBFT, connectivity-based fine-tuning (Lubana et al. 2023), as Siddiqui et al. 2025 adapt it.

    The paper (and its released code): fine-tune on the retain set while raising a loss barrier on
    the straight path to the original model. Per step, `CE(retain batch) + alpha * max(-CE_mid, -gamma)`,
    where `CE_mid` is the cross-entropy, on the retain batch concatenated with a forget batch, of the
    model whose parameters and floating-point buffers are `(1 - t) * original + t * current` at the
    midpoint `t` = 0.5 (gradients flow through the current model's share); the midpoint loss is
    maximised only up to `gamma` = 50, with `alpha` = 0.001 and Adam at lr 1e-5 for 100 epochs in the
    authors' scripts, which run it (like Weight Dist Reg) on top of an initial safeguard.

    Here: that loss, with the recipe's optimizer at `lr_scale` (1.0) times its rate, retain batches
    of the recipe's size, forget batches of `forget_batch_size` (default: the same), cycled; the
    midpoint model is evaluated with `torch.func.functional_call` (integer buffers are taken from the
    current model, batch-norm statistics updated by the midpoint pass go to temporaries). `bound` is
    the paper's `gamma`. Options: `mix` = (low, high) draws `t` uniformly per step from
    `request.generator` instead of the fixed midpoint; `barrier_on_retain=False` maximises the
    midpoint loss on the forget batch only; `initial_safeguard` / `safeguard_share` as in
    `WeightDistReg`. Each step forwards the retain batch twice (at the current weights and at the
    midpoint) and the forget batch once, and costs all of them: about 22 steps fit a 10% budget on
    `tiny`, a third of GD's. With an empty retain set only the barrier term is used; with both
    sets empty the model is returned unchanged.

    `alpha` = 0.3 was chosen on retain-set accuracy only, never on the audit's scores (the protocol
    of `WeightDistortion`): of 0.1, 0.2, 0.3, 0.5 and 0.7 it is the largest whose mean held-out
    retain accuracy stays within one point of GD's (0.4 points below; 0.5 costs 2.3, 0.7 costs 5,
    mostly on the backdoor fixtures, where the ascent on the forget set -- triggered images labelled
    0 -- runs away on some seeds). A larger `lr_scale` (2 or 3, to make up for the fewer steps) cost 1-8 points on
    seeds 1-2. The paper's `alpha` = 0.001 is not comparable (Adam). Expect little: at a minimum of
    the original's loss the barrier gradient is tiny and SGD barely leaves the basin in 22 steps
    (the model ends 0.07-0.9 in L2 from the original over fixture seeds 0-2; on seed 0 nearer than
    GD's 0.2-0.3).
    """

    alpha: float = 0.3
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
