"""`not_mode_connected`: is the unlearned model still in the poisoned model's basin?

Siddiqui et al. find that models which relearn the forgotten knowledge stay linearly
mode-connected to the original (no loss barrier on the straight path between them, small L2
distance), while a model retrained from scratch is separated from it by a barrier. We
interpolate parameters and batch-norm statistics at `points` mixing weights between the
poisoned original (0) and the unlearned model (1), 21 points by default (the authors' stride of
0.05), and measure test loss, test accuracy and the poison metric along the path.

Score: the test-loss barrier, max over the path of loss(a) - [(1 - a) loss(0) + a loss(1)],
with its standard error from the per-sample loss differences at the maximising a.
Rule: fail if the barrier is below `min_barrier_fraction` of retrain's barrier (retrain
interpolated against the same original), one-sided at alpha. Also fail if the barrier was not
measured: a test loss that is not finite on the path, or losses so large that the rounding of the
evaluation's precision alone could hide a path with no barrier (its standard error,
`ROUNDING_SPREAD` x eps x the rms of each sample's largest loss on the path / sqrt(n), at least
(z_alpha + z_0.8) of it below the threshold). The lenient rule needs that: an output layer scaled
up by 1e8 leaves every prediction as it was and has no barrier (the loss is convex in the logits'
scale), yet rounding made its barrier 0.13 ± 0.49 nats on `tiny`'s backdoor, and nothing at that
precision is significantly below a threshold of 0.019. For ordinary models (losses of a few nats)
rounding's share is about 1e-8 nats in fp32 on `tiny` (measured), and about 1e-3 in bf16 on the CIFAR
profile against a threshold near 0.5 (estimated).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from scipy import stats as st

from unlearn_audit.checks import evidence
from unlearn_audit.checks.base import POWER_TARGET, CheckContext, CheckInfo, CheckResult
from unlearn_audit.checks.power import certain, with_power
from unlearn_audit.training.interpolation import interpolate, parameter_distance, per_sample_loss
from unlearn_audit.training.loops import predict
from unlearn_audit.training.numerics import evaluation_numerics

CHECK = CheckInfo(
    name="not_mode_connected",
    kind="removal",
    metric="test-loss barrier on the linear path",
    unit="nats",
    direction="higher_is_better",
)


def path_profile(ctx: CheckContext, end: torch.nn.Module, points: int) -> dict[str, Any]:
    """Losses, accuracy and poison along the linear path from the original to `end` (memoised)."""
    f = ctx.fixture
    x, y = f.tensors["test_x"], f.tensors["test_y"]

    def compute() -> dict[str, Any]:
        start = f.original  # never moved: the path lives on its device (interpolate copies `end` there)
        alphas = [i / (points - 1) for i in range(points)]
        losses, accs, poison = [], [], []
        for a in alphas:
            m = interpolate(start, end, a)
            ls = per_sample_loss(m, x, y)
            losses.append(ls)
            accs.append(float((predict(m, x) == y).float().mean()))
            poison.append(ctx.attack.measure_poison(f, m, memo=ctx.measure).value)
        l0, l1 = losses[0], losses[-1]
        excess = [ls - ((1 - a) * l0 + a * l1) for a, ls in zip(alphas, losses)]
        means = [float(e.mean()) for e in excess]
        i = max(range(points), key=lambda j: means[j])
        barrier, se = means[i], float(excess[i].std(unbiased=True) / len(x) ** 0.5) if means[i] > 0 else 0.0
        largest = torch.stack(losses).abs().amax(0)  # each sample's largest loss on the path
        numerics = evaluation_numerics(next(start.parameters()).device)
        eps = torch.finfo(numerics.autocast_dtype or torch.float32).eps
        rounding_se = ROUNDING_SPREAD * eps * float(largest.pow(2).mean().sqrt()) / len(x) ** 0.5
        errors = [1 - acc for acc in accs]
        error_barrier = max(e - ((1 - a) * errors[0] + a * errors[-1]) for a, e in zip(alphas, errors))
        return {
            "alphas": alphas,
            "test_loss": [float(ls.mean()) for ls in losses],
            "test_accuracy": accs,
            "poison": poison,
            "barrier": max(barrier, 0.0),
            "barrier_stderr": se,
            "rounding_stderr": rounding_se,
            "barrier_alpha": alphas[i],
            "error_barrier": max(error_barrier, 0.0),
            "l2_distance": parameter_distance(start, end),
        }

    return ctx.measure(end, f"path-{points}", compute)


ROUNDING_BARRIER = 1e-6
"""Nats. Losses along a path are fp32 means over the test set: a barrier below this is rounding, not a
barrier (real barriers on `tiny` are 0.1 nats and more)."""


ROUNDING_SPREAD = 4.0
"""How many times eps x a sample's loss its per-sample excess may err by in rounding. On `tiny` with the
output layer scaled by 1e7 and 1e8 (fp32), the barrier's measured standard error was 1.5 to 2.7 times
eps x rms / sqrt(n); 4 over-estimates it, so that a path rounding hides is not judged on its rounding."""


def unmeasured(barrier: float, se: float, threshold: float, rounding_se: float, alpha: float) -> str:
    """Why the path's barrier shows nothing about the basin (empty: it was measured). Judged only where
    retrain's barrier is a real one: below that, nothing fails anyway and the power says so."""
    if not (math.isfinite(barrier) and math.isfinite(se) and math.isfinite(rounding_se)):
        return "the test loss is not finite on the path"
    reach = float(st.norm.isf(alpha) + st.norm.ppf(POWER_TARGET))
    if threshold > 0 and reach * rounding_se > threshold:
        return (
            f"the path's losses are so large that rounding alone gives its barrier a standard error of "
            f"{rounding_se:.3g} nats, enough to hide a path with no barrier "
            f"({reach:.2f} x {rounding_se:.3g} > the threshold {threshold:.3g})"
        )
    return ""


def run(ctx: CheckContext) -> CheckResult:
    """Judge whether the unlearned model left the poisoned original's basin (a loss barrier on the path)."""
    alpha = float(ctx.options.get("alpha", 0.01))
    fraction = float(ctx.options.get("min_barrier_fraction", 0.25))
    points = int(ctx.options.get("points", 21))
    mine = path_profile(ctx, ctx.model, points)
    ref = path_profile(ctx, ctx.fixture.retrain, points)
    threshold = fraction * ref["barrier"]
    b, se = mine["barrier"], mine["barrier_stderr"]
    real_barrier = ref["barrier"] > ROUNDING_BARRIER
    rounding = float(mine.get("rounding_stderr", 0.0))  # absent from a cache written before it was measured
    why_unmeasured = unmeasured(b, se, threshold, rounding, alpha) if real_barrier else ""
    if why_unmeasured:
        failed = True
    elif se > 0:
        failed = float(st.norm.sf((threshold - b) / se)) < alpha
    else:
        failed = b < threshold
    rule = (
        f"fail if the test-loss barrier on the linear path from the poisoned original "
        f"is below {fraction:g} x retrain's "
        f"barrier ({threshold:.3g}), one-sided at alpha={alpha:g} (se from per-sample losses, {points} points), "
        f"or if the barrier was not measured (a loss not finite, or rounding enough to hide no barrier)"
    )
    distances = f"L2 distance {mine['l2_distance']:.3g} vs retrain {ref['l2_distance']:.3g}"
    if why_unmeasured:
        message = f"the loss barrier on the path from the poisoned original was not measured: {why_unmeasured}"
        message += f"; {distances}"
    elif failed:
        message = (
            f"the unlearned model is still linearly connected to the poisoned original: barrier {b:.3g} ± {se:.2g} "
            f"vs retrain {ref['barrier']:.3g}; {distances}"
        )
    else:
        message = ""
    details = {
        "l2_distance": mine["l2_distance"],
        "retrain_l2_distance": ref["l2_distance"],
        "l2_ratio": mine["l2_distance"] / ref["l2_distance"] if ref["l2_distance"] else float("nan"),
        "barrier_alpha": mine["barrier_alpha"],
        "rounding_stderr": rounding,
        "error_barrier": mine["error_barrier"],
        "retrain_error_barrier": ref["error_barrier"],
        "path": {k: mine[k] for k in ("alphas", "test_loss", "test_accuracy", "poison")},
        "retrain_path": {k: ref[k] for k in ("alphas", "test_loss", "test_accuracy", "poison")},
        "evidence": evidence.shortfall(threshold - b, se, b, ref["barrier"], why_unmeasured),
    }
    result = CheckResult(
        check=CHECK.name,
        metric=CHECK.metric,
        unit=CHECK.unit,
        verdict="fail" if failed else "pass",
        score=b,
        stderr=se,
        reference=ref["barrier"],
        reference_stderr=ref["barrier_stderr"],
        direction=CHECK.direction,
        rule=rule,
        message=message,
        details=details,
    )
    # The unremoved poison is the original itself: its path to itself has no barrier, so it fails
    # whenever retrain's barrier is a real one, and never otherwise. A barrier at the level of rounding
    # (retrain in the original's basin) gives no power: the original's own rounding-level barrier may pass.
    return certain(result) if real_barrier else with_power(result, float("-inf"), alpha)
