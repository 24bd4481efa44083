"""A compiled model's gradients compared with the eager model's once, before a loop trains through it.

Why: `torch.compile` replaces a model's kernels with generated ones, and a loop that trains through
them trusts their gradients. A wrong gradient raises nothing. A fixture trained with one is a wrong
fixture, and a relearning attack run with one gives a wrong verdict. This has happened: on an
AVX2-only CPU, torch 2.13's oneDNN computed the weight gradient of a 1x1 stride-2 convolution with
fewer than 8 input channels in channels_last (the layout a compiled CPU graph uses) 47 times too
large on a width-4 ResNet-18, while every other gradient stayed within 1e-3 of eager.

So every loop that trains through a compiled model (the fast trainer, the relearning attack) first
computes one full batch's parameter gradients through the compiled model and through the eager one, in
the loop's own numerics, and refuses to go on when a parameter's compiled gradient is further from the
truth than rounding explains. The truth is the eager model in fp32. Under bf16 autocast the eager
model's own distance from it says how much rounding moves that parameter's gradient: batch-norm
gradients of a freshly initialised ResNet-18 are sums of terms that nearly cancel, and bf16 moved them
by up to 100% of their norm (measured on a CPU), where compiled and eager alike are mostly rounding. So
a parameter passes when

    ||compiled - fp32|| <= EAGER_RATIO x ||eager - fp32|| + TOLERANCE x ||fp32||

(norms floored at `NEGLIGIBLE_GRADIENT` of the largest parameter's). This is a guard against a kernel
that computes something else, not a test of rounding. In fp32 a gradient more than 50% off fails it;
under bf16 so does one of a parameter whose rounding error is small (a convolution's weight), while a
batch-norm parameter's fails only when it is several times off. The check costs two or three forward
and backward passes of one batch; the compiled one compiles the graph, which the loop's first step
would pay for anyway. Batch-norm statistics are restored afterwards and no `.grad` is touched, so the
loop then takes exactly the steps it would have taken without the check.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from unlearn_audit.training.graphed_step import LossFn, cross_entropy
from unlearn_audit.training.numerics import LoopNumerics

TOLERANCE = 0.5
"""The distance from the fp32 gradient, in units of its norm, that any parameter's compiled gradient may have
on top of `EAGER_RATIO` times the eager model's. In fp32, two correct kernels differ in summation order
only: at most 7e-3 of a parameter's gradient norm on ResNet-18 at widths 8 and 16 compiled on a CPU (4
batches each, measured). The one wrong gradient seen so far was 41-68 norms away."""

EAGER_RATIO = 4.0
"""How many times the eager model's own rounding error a compiled gradient may have. Measured on ResNet-18 at
widths 4, 8 and 16 (4 batches of 64 each) and 32 (2 of 128) compiled on a CPU under bf16 autocast: the
compiled gradient's error was at most 3.9 times the eager one's (0.46 against 0.12, a batch-norm weight),
and the largest share of the allowance any parameter used was 0.47."""

NEGLIGIBLE_GRADIENT = 1e-3
"""Gradients smaller than this fraction of the largest parameter gradient are compared in absolute terms.

Such a gradient is rounding noise in every run (a convolution's bias before a batch norm has an exact
gradient of 0), so a ratio of two of them is meaningless."""


class CompiledGradientMismatch(RuntimeError):
    """The compiled model's gradients are not the eager model's: training through it would be wrong."""


@dataclass(frozen=True)
class GradientAgreement:
    """How far one batch's compiled gradients were from the fp32 eager ones, at the parameter nearest its limit.

    `compiled_error` and `eager_error` are distances from the fp32 gradient in units of its norm (`eager_error`
    is 0 when the loop computes in fp32); `excess` is the compiled distance over what the rule allows (<= 1
    passes)."""

    worst_parameter: str
    compiled_error: float
    eager_error: float
    excess: float
    parameters: int


def _gradients(
    forward: Callable[[torch.Tensor], torch.Tensor],
    params: Sequence[torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    autocast: contextlib.AbstractContextManager[object],
    loss_fn: LossFn,
) -> list[torch.Tensor | None]:
    with autocast:
        logits = forward(x)
    loss = loss_fn(logits, y)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [None if g is None else g.detach().float().clone() for g in grads]


def _distance(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    if a is None and b is None:
        return 0.0
    if a is None or b is None:
        return math.inf
    return float((a - b).norm())


def compare_gradients(
    model: nn.Module,
    compiled: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    numerics: LoopNumerics,
    *,
    loss_fn: LossFn = cross_entropy,
) -> GradientAgreement:
    """One batch's parameter gradients through `compiled` (which wraps `model`) against `model`'s, by the rule of
    the module docstring.

    `x` is already in the loop's input format. Every run is in train mode; batch-norm running statistics
    (every buffer of `model`) are put back as they were, and the parameters' `.grad` are not touched. A
    `ValueError` if the eager model's own fp32 gradient is not finite (a diverged model, not a compiler's fault)."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    saved = [b.detach().clone() for b in model.buffers()]
    try:
        eager = _gradients(model, params, x, y, numerics.autocast(), loss_fn)
        fp32 = eager
        if numerics.autocast_dtype is not None:
            fp32 = _gradients(model, params, x, y, contextlib.nullcontext(), loss_fn)
        if numerics.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        traced = _gradients(compiled, params, x, y, numerics.autocast(), loss_fn)
    finally:
        with torch.no_grad():
            for buffer, value in zip(model.buffers(), saved):
                buffer.copy_(value)
    norms = [0.0 if g is None else float(g.norm()) for g in fp32]
    for (name, _), norm in zip(named, norms):
        if not math.isfinite(norm):  # then nothing is wrong with the compilation that this batch could show
            raise ValueError(f"the eager model's own fp32 gradient of {name!r} is not finite on the check's batch")
    floor = NEGLIGIBLE_GRADIENT * max(norms, default=0.0)
    worst = GradientAgreement("", 0.0, 0.0, 0.0, len(named))
    for (name, _), truth, e, c, norm in zip(named, fp32, eager, traced, norms):
        scale = max(norm, floor)
        if scale == 0:
            scale = 1.0  # no gradient anywhere: compare absolutely
        compiled_error, eager_error = _distance(c, truth) / scale, _distance(e, truth) / scale
        allowed = EAGER_RATIO * eager_error + TOLERANCE
        excess = compiled_error / allowed if math.isfinite(allowed) else math.nan
        if not excess <= worst.excess:  # the largest excess; a NaN (a non-finite gradient) beats any
            worst = GradientAgreement(name, compiled_error, eager_error, excess, len(named))
            if math.isnan(excess):
                break
    return worst


def check_compiled_gradients(
    model: nn.Module,
    compiled: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    numerics: LoopNumerics,
    *,
    loop: str,
    loss_fn: LossFn = cross_entropy,
) -> GradientAgreement:
    """`compare_gradients`, raising `CompiledGradientMismatch` (naming `loop`, the parameter and its errors) when
    a parameter's compiled gradient is further from fp32 than the rule allows, or is not finite."""
    agreement = compare_gradients(model, compiled, x, y, numerics, loss_fn=loss_fn)
    if not agreement.excess <= 1.0:
        bf16 = numerics.autocast_dtype is not None
        eager = f", the eager model's {agreement.eager_error:.3g}" if bf16 else ""
        allowed = f"{EAGER_RATIO:g} x the eager model's + {TOLERANCE:g}" if bf16 else f"{TOLERANCE:g}"
        raise CompiledGradientMismatch(
            f"{loop}: under torch.compile ({numerics.describe()}) the gradient of {agreement.worst_parameter!r} "
            f"is {agreement.compiled_error:.3g} of its norm away from the fp32 eager gradient{eager} (allowed: "
            f"{allowed}); training through the compiled model would be "
            'wrong. Set the recipe\'s [training] compile = "none", or try another compile mode or torch version.'
        )
    return agreement
