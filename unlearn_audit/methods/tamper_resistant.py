"""Tamper-resistant unlearning through weight-space regularisation (Siddiqui et al. 2025).

Siddiqui et al. ("From Dormant to Deleted", arXiv 2505.22310, NeurIPS 2025) find that forgotten
knowledge returns under fine-tuning when the unlearned model stays close to the original (small L2
distance, no loss barrier on the straight path between them), and propose methods that move the
model away from the original on purpose: Weight Distortion, Weight Dist Reg and CBFT (their
adaptation of Lubana et al.'s connectivity-based fine-tuning). The authors' code
(github.com/shoaibahmed/vision_relearning) was read for the facts the paper's text leaves out; the
implementations here are our own, on this package's protocol: the request's budget as the harness
counts it, randomness from `request.generator` only. `WeightDistReg` and `CBFT` follow the authors'
scripts (an alternating-SCRUB safeguard, then the weight-space phase, with Adam);
`WeightDistRegSGD` and `CBFTSGD` are single-phase ablations with the recipe's optimizer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.methods._adam_reach import AUTHORS_REACH, reach_scaled_lr
from unlearn_audit.methods._common import Spend, device_generator, epoch_batches
from unlearn_audit.methods.alternating_scrub import AlternatingSCRUB
from unlearn_audit.protocol import Budget, UnlearningRequest


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _recipe_optimizer(model: nn.Module, request: UnlearningRequest, lr_scale: float) -> torch.optim.Optimizer:
    return request.recipe.make_optimizer(_trainable(model), lr=request.recipe.lr * lr_scale)


def _adam(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """The authors' unlearning optimizer: Adam without weight decay."""
    return torch.optim.Adam(_trainable(model), lr=lr, weight_decay=0.0)


def _retain_steps(
    model: nn.Module,
    request: UnlearningRequest,
    spend: Spend,
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    regulariser: Callable[[], torch.Tensor] | None = None,
) -> None:
    """Fine-tune on the retain set (batches of the recipe's size) with `make_optimizer(model)` until the
    budget is spent, the last batch cut short; `regulariser()`, if given, is added to every step's loss
    (it must not forward examples)."""
    recipe = request.recipe
    if spend.left <= 0 or len(request.retain) == 0:
        return
    optimizer = make_optimizer(model)
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


def _initial_safeguard(
    model: nn.Module, request: UnlearningRequest, safeguard: Any, share: float, spend: Spend
) -> nn.Module:
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
        _retain_steps(
            model,
            request,
            Spend(int(self.budget_use * request.budget.example_gradients)),
            lambda m: _recipe_optimizer(m, request, self.lr_scale),
        )
        return model.eval()


def _distance_regulariser(
    params: list[nn.Parameter], original: list[torch.Tensor], alpha: float, eps: float
) -> Callable[[], torch.Tensor]:
    """`-alpha * sqrt(mean_i (theta_i - theta0_i)^2 + eps)`: the Weight Dist Reg term (no forward pass)."""
    count = sum(p.numel() for p in params)

    def regulariser() -> torch.Tensor:
        sq = cast(torch.Tensor, sum((p - p0).pow(2).sum() for p, p0 in zip(params, original)))
        return -alpha * torch.sqrt(sq / count + eps)

    return regulariser


def _barrier_steps(
    model: nn.Module,
    request: UnlearningRequest,
    spend: Spend,
    optimizer: torch.optim.Optimizer,
    start_params: dict[str, torch.Tensor],
    start_buffers: dict[str, torch.Tensor],
    *,
    alpha: float,
    bound: float,
    draw_mix: Callable[[], float],
    forget_batch_size: int,
    barrier_on_retain: bool,
) -> None:
    """CBFT's loop: per step `CE(retain batch) - alpha * min(CE_mid, bound)`, CE_mid on the model interpolated
    at `draw_mix()` between the start point and the current weights; stops before a step that does not fit."""
    retain_stream = epoch_batches(request.retain, request.recipe.batch_size, request)
    forget_stream = epoch_batches(request.forget, forget_batch_size, request)
    model.train()
    while True:
        xr, yr = next(retain_stream, (None, None))
        xf, yf = next(forget_stream, (None, None))
        nr = 0 if yr is None else len(yr)
        barrier_x = [x for x in ((xr if barrier_on_retain else None), xf) if x is not None]
        barrier_y = [y for y in ((yr if barrier_on_retain else None), yf) if y is not None]
        cost = nr + sum(len(y) for y in barrier_y)
        if cost == 0 or not spend.fits(cost):
            break
        t = draw_mix()
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
            loss = loss - alpha * torch.clamp(mid_loss, max=bound)
        loss.backward()
        optimizer.step()
        spend.add(cost)


def _snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return (
        {n: p.detach().clone() for n, p in model.named_parameters()},
        {n: b.detach().clone() for n, b in model.named_buffers()},
    )


def _safeguarded(model: nn.Module, request: UnlearningRequest, safeguard: Any, share: float, spend: Spend) -> nn.Module:
    return model if safeguard is None else _initial_safeguard(model, request, safeguard, share, spend)


@dataclass
class WeightDistReg:
    """Weight Dist Reg as published (Siddiqui et al. 2025): alternating SCRUB, then fine-tuning that
    pushes the weights away from the original.

    Source: the paper and the authors' code (github.com/shoaibahmed/vision_relearning), read for
    what the text leaves out; the code here is ours. In the authors' scripts Weight Dist Reg always
    starts from an "initial safeguard" -- the launcher's default is alternating SCRUB
    (`AlternatingSCRUB`: lr 1e-5, alpha = gamma = 1, 100 epochs), even in the runs the paper's
    Fig. 2 lists as single methods -- and then minimises, per retain mini-batch,
    `CE(retain) - alpha * sqrt(mean_i (theta_i - theta0_i)^2 + 1e-8)` with theta0 the *original*
    (pre-safeguard) model: the RMS distance to it is maximised without bound. Settings: `alpha` = 1,
    Adam at lr 1e-5 without weight decay, 100 epochs of the training loader per phase.

    Here: the same two phases and loss, `alpha` = 1, Adam without weight decay, retain batches of
    the recipe's size. The safeguard gets `safeguard_share` = 0.5 of the budget (the authors give
    both phases the same 100 epochs) and is charged that share in full; the second phase gets the
    rest, the last batch cut short. The distance term needs no forward pass and costs nothing.
    Deviation, forced by the budget: the authors' 39,100 steps per phase do not fit a 10% budget
    (about 34 steps per phase on `tiny`), so each phase's Adam rate keeps the authors' reach
    lr x steps = 0.391 (`_adam_reach`): about 0.011 on `tiny`. `reach` (or `lr`) sets the second
    phase's rate instead (the safeguard has its own), and `safeguard=None` runs the second phase
    alone from the original. With an empty
    retain set the second phase has nothing to fine-tune on and the safeguarded model is returned.
    Nothing here was tuned on the audit's scores. `WeightDistRegSGD` is the earlier single-phase,
    recipe-SGD variant.
    """

    alpha: float = 1.0
    lr: float | None = None
    reach: float = AUTHORS_REACH
    safeguard: Any = field(default_factory=AlternatingSCRUB)
    safeguard_share: float = 0.5
    budget_use: float = 1.0
    eps: float = 1e-8

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module:
        model.to(request.device)
        spend = Spend(int(self.budget_use * request.budget.example_gradients))
        original = [p.detach().clone() for p in model.parameters() if p.requires_grad]
        model = _safeguarded(model, request, self.safeguard, self.safeguard_share, spend)
        lr = self.lr if self.lr is not None else reach_scaled_lr(spend.left, request.recipe.batch_size, self.reach)
        regulariser = _distance_regulariser(_trainable(model), original, self.alpha, self.eps)
        _retain_steps(model, request, spend, lambda m: _adam(m, lr), regulariser)
        return model.eval()


@dataclass
class WeightDistRegSGD:
    """Weight Dist Reg's loss alone, with the recipe's SGD: the single-phase variant this package shipped first.

    Kept as an ablation of `WeightDistReg`: the same distance-maximising loss without the alternating-
    SCRUB safeguard and without Adam shows that, within a 10% budget, SGD barely follows the distance
    gradient (the model ends about 1 in L2 from the original, like fine-tuning) -- the published
    method's effect comes from Adam's per-parameter steps and the safeguard, not from the loss alone.

    Loss per retain mini-batch: `CE(retain) - alpha * sqrt(mean_i (theta_i - theta0_i)^2 + 1e-8)`
    (theta0: the original model; the gradient of the distance term has constant norm
    `alpha / sqrt(#params)` along the current displacement and is zero at the start). Here with the
    recipe's optimizer at `lr_scale` (1.0) times its rate, on retain batches of the recipe's size
    until `budget_use` of the budget is spent (the last batch cut short); the distance term costs
    nothing. `initial_safeguard` (any unlearner, e.g. `GradientAscent()`) runs first, within
    `safeguard_share` (0.5) of the budget, which is charged in full. With an empty retain set the
    model is returned as it stands.

    `alpha` = 20 was chosen on retain-set accuracy only, never on the audit's scores: each candidate
    ran on a request whose retain set was 85% of the real one, and accuracy was measured on the
    other 15%, on both `tiny` scenarios for fixture seeds 0-2 (run seed 7); of 10, 20, 30 and 50 it
    is the largest whose mean held-out retain accuracy stays within one point of GD's (0.75 points
    below; 30 costs 1.3, 50 costs 2.8). The authors' `alpha` = 1 is not comparable, because Adam
    rescales every gradient.
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
        model = _safeguarded(model, request, self.initial_safeguard, self.safeguard_share, spend)
        regulariser = _distance_regulariser(_trainable(model), original, self.alpha, self.eps)
        _retain_steps(model, request, spend, lambda m: _recipe_optimizer(m, request, self.lr_scale), regulariser)
        return model.eval()


@dataclass
class CBFT:
    """CBFT as Siddiqui et al. 2025 publish it: alternating SCRUB, then connectivity-based fine-tuning
    (Lubana et al. 2023).

    Source: the paper and the authors' code (github.com/shoaibahmed/vision_relearning, method
    `mode_connectivity`), read for the facts; the code here is ours. Like Weight Dist Reg it runs in
    the authors' scripts on top of an initial safeguard (alternating SCRUB by default, see
    `AlternatingSCRUB`), then fine-tunes on the retain set while raising a loss barrier on the
    straight path to the *original* model: per step `CE(retain batch) + alpha * max(-CE_mid, -gamma)`,
    where `CE_mid` is the cross-entropy, on the retain batch concatenated with a forget batch of the
    same size, of the model whose parameters and floating-point buffers are
    `(1 - t) * original + t * current` at `t` = 0.5 (gradients flow through the current share;
    integer buffers from the current model). Settings: `alpha` = 0.001, `gamma` = 50, Adam at
    lr 1e-5 without weight decay, 100 epochs per phase.

    Here: the same two phases and loss with those settings (`bound` is `gamma`), retain and forget
    batches of the recipe's size, cycled; the midpoint model is evaluated with
    `torch.func.functional_call` (batch-norm statistics updated by the midpoint pass go to
    temporaries). The safeguard gets `safeguard_share` = 0.5 of the budget, charged in full. Each
    second-phase step forwards the retain batch twice and the forget batch once and pays for all
    of them (about 11 steps on `tiny` at a 10% budget). Deviation, forced by the budget: the Adam
    rate keeps the authors' reach lr x steps = 0.391 over the steps the budget pays for
    (`_adam_reach`; about 0.035 on `tiny`), unless `reach` or `lr` says otherwise; `safeguard=None` runs the second
    phase alone. With empty retain and forget sets the safeguarded model is returned. Nothing here
    was tuned on the audit's scores. `CBFTSGD` is the earlier single-phase, recipe-SGD variant.
    """

    alpha: float = 0.001
    bound: float = 50.0
    lr: float | None = None
    reach: float = AUTHORS_REACH
    safeguard: Any = field(default_factory=AlternatingSCRUB)
    safeguard_share: float = 0.5
    budget_use: float = 1.0

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module:
        model.to(request.device)
        spend = Spend(int(self.budget_use * request.budget.example_gradients))
        start_params, start_buffers = _snapshot(model)
        model = _safeguarded(model, request, self.safeguard, self.safeguard_share, spend)
        if len(request.retain) == 0 and len(request.forget) == 0:
            return model.eval()
        batch = request.recipe.batch_size
        lr = self.lr if self.lr is not None else reach_scaled_lr(spend.left, 3 * batch, self.reach)
        _barrier_steps(
            model,
            request,
            spend,
            _adam(model, lr),
            start_params,
            start_buffers,
            alpha=self.alpha,
            bound=self.bound,
            draw_mix=lambda: 0.5,
            forget_batch_size=batch,
            barrier_on_retain=True,
        )
        return model.eval()


@dataclass
class CBFTSGD:
    """CBFT's loss alone, with the recipe's SGD: the single-phase variant this package shipped first.

    Kept as an ablation of `CBFT`: without the alternating-SCRUB safeguard and Adam, the barrier
    loss barely moves the model within a 10% budget (at a minimum of the original's loss the
    barrier gradient is tiny), so it shows that the published method's effect does not come from
    the barrier term alone.

    Per step `CE(retain batch) - alpha * min(CE_mid, bound)` with `CE_mid` as in `CBFT`, with the
    recipe's optimizer at `lr_scale` (1.0) times its rate, retain batches of the recipe's size,
    forget batches of `forget_batch_size` (default: the same), cycled. Options: `mix` = (low, high)
    draws `t` uniformly per step from `request.generator` instead of the fixed midpoint;
    `barrier_on_retain=False` maximises the midpoint loss on the forget batch only;
    `initial_safeguard` / `safeguard_share` as in `WeightDistRegSGD`. About 22 steps fit a 10%
    budget on `tiny`, a third of GD's. With an empty retain set only the barrier term is used; with
    both sets empty the model is returned unchanged.

    `alpha` = 0.3 was chosen on retain-set accuracy only, never on the audit's scores (the protocol
    of `WeightDistRegSGD`): of 0.1, 0.2, 0.3, 0.5 and 0.7 it is the largest whose mean held-out
    retain accuracy stays within one point of GD's (0.4 points below; 0.5 costs 2.3, 0.7 costs 5,
    mostly on the backdoor fixtures, where the ascent on the forget set -- triggered images labelled
    0 -- runs away on some seeds). A larger `lr_scale` (2 or 3) cost 1-8 points on seeds 1-2. The
    model ends 0.07-0.9 in L2 from the original over fixture seeds 0-2 (on seed 0 nearer than GD's
    0.2-0.3).
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
        model.to(request.device)
        spend = Spend(int(self.budget_use * request.budget.example_gradients))
        start_params, start_buffers = _snapshot(model)
        model = _safeguarded(model, request, self.initial_safeguard, self.safeguard_share, spend)
        if len(request.retain) == 0 and len(request.forget) == 0:
            return model.eval()
        _barrier_steps(
            model,
            request,
            spend,
            _recipe_optimizer(model, request, self.lr_scale),
            start_params,
            start_buffers,
            alpha=self.alpha,
            bound=self.bound,
            draw_mix=lambda: self._draw_mix(request),
            forget_batch_size=self.forget_batch_size or request.recipe.batch_size,
            barrier_on_retain=self.barrier_on_retain,
        )
        return model.eval()

    def _draw_mix(self, request: UnlearningRequest) -> float:
        if isinstance(self.mix, (int, float)):
            return float(self.mix)
        low, high = self.mix
        return float(low + (high - low) * torch.rand((), generator=request.generator))


__all__ = ["CBFT", "CBFTSGD", "WeightDistReg", "WeightDistRegSGD", "WeightDistortion"]
