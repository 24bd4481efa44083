"""`targeted_removed`: is the targeted poison's effect gone, as it is after retraining?

Score: attack success rate on held-out triggered inputs of the non-target classes, with a
Wilson interval; compared with retrain's rate on the same inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from unlearn_audit.attacks import triggered_test_inputs
from unlearn_audit.metrics import hits_target
from unlearn_audit.stats import Proportion, excess_test
from unlearn_audit.checks.base import CheckContext, CheckResult
from unlearn_audit.checks.utility_preserved import clean_test_accuracy

if TYPE_CHECKING:
    from unlearn_audit.scenarios.fixture import Fixture

NAME = "targeted_removed"


def triggered_hits(fixture: "Fixture", model: torch.nn.Module) -> torch.Tensor:
    """Per-input attack success on the triggered held-out test inputs of the non-target classes (not memoised:
    the relearning attack measures one model object as it changes)."""
    a = fixture.recipe.attack
    return hits_target(model, triggered_test_inputs(a, fixture.tensors), a["target_class"])


def attack_hits(ctx: CheckContext, model: torch.nn.Module) -> torch.Tensor:
    """`triggered_hits`, memoised per (unchanging) model for the checks of one case."""
    return ctx.measure(model, "attack_hits", lambda: triggered_hits(ctx.fixture, model))


def run(ctx: CheckContext) -> CheckResult:
    if ctx.fixture.recipe.attack["kind"] == "witches_brew":
        from unlearn_audit.checks import clean_label

        return clean_label.run(ctx)
    alpha = float(ctx.options.get("alpha", 0.01))
    margin = float(ctx.options.get("margin", 0.05))
    mine = attack_hits(ctx, ctx.model)
    ref = attack_hits(ctx, ctx.fixture.retrain)
    orig = attack_hits(ctx, ctx.fixture.original)
    a = Proportion(int(mine.sum()), len(mine))
    b = Proportion(int(ref.sum()), len(ref))
    test = excess_test(a, b, margin, alpha)
    rule = (
        f"fail if attack success exceeds retrain's by more than {margin:g}, one-sided at alpha={alpha:g} "
        f"(Newcombe-Wilson interval of the difference, n={len(mine)} triggered test inputs)"
    )
    message = (
        f"the poison still works: attack success {a.value:.3f} vs retrain {b.value:.3f} "
        f"(lower bound of the excess {test.lower_bound:.3f} > {margin:g}); original {orig.float().mean():.3f}"
        if test.rejected
        else ""
    )
    details = {
        "excess_lower_bound": test.lower_bound,
        "interval_95": list(a.interval),
        "original_attack_success": float(orig.float().mean()),
        "clean_test_accuracy": clean_test_accuracy(ctx, ctx.model),
    }
    return CheckResult(
        NAME, "fail" if test.rejected else "pass", a.value, a.stderr, b.value, b.stderr, "lower_is_better", rule, message, details
    )
