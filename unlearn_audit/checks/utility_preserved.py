"""`utility_preserved`: clean test accuracy close to the retrain reference's.

A method that destroys the model must not pass the removal checks for free, so those checks
report this accuracy too.
"""

from __future__ import annotations

import torch

from unlearn_audit.checks import evidence
from unlearn_audit.checks.base import CheckContext, CheckInfo, CheckResult
from unlearn_audit.metrics import correct
from unlearn_audit.stats import ExcessTest, Proportion, excess_test

CHECK = CheckInfo(
    name="utility_preserved", kind="other", metric="clean test accuracy", unit="fraction", direction="higher_is_better"
)


def clean_test_correct(ctx: CheckContext, model: torch.nn.Module) -> torch.Tensor:
    """Per-example correctness on the clean test set (memoised per model)."""
    t = ctx.fixture.tensors
    return ctx.measure(model, "clean_test_correct", lambda: correct(model, t["test_x"], t["test_y"]))


def clean_test_accuracy(ctx: CheckContext, model: torch.nn.Module) -> float:
    """Accuracy on the clean test set (memoised per model)."""
    return float(clean_test_correct(ctx, model).float().mean())


def accuracy_below_retrain(ctx: CheckContext) -> tuple[Proportion, Proportion, ExcessTest, float, float]:
    """(retrain's accuracy, the method's, the one-sided test of the gap against the margin, alpha, margin).

    Shared by `utility_preserved` and `indiscriminate_restored`, which apply the same rule.
    """
    alpha = float(ctx.options.get("alpha", 0.01))
    margin = float(ctx.options.get("margin", 0.05))
    mine = clean_test_correct(ctx, ctx.model)
    ref = clean_test_correct(ctx, ctx.fixture.retrain)
    retrain_acc = Proportion(int(ref.sum()), len(ref))
    acc = Proportion(int(mine.sum()), len(mine))
    return retrain_acc, acc, excess_test(retrain_acc, acc, margin, alpha), alpha, margin


def run(ctx: CheckContext) -> CheckResult:
    """Judge whether clean test accuracy stays within the margin of retrain's."""
    retrain_acc, acc, test, alpha, margin = accuracy_below_retrain(ctx)
    rule = (
        f"fail if retrain's test accuracy exceeds the method's by more than {margin:g}, "
        f"one-sided at alpha={alpha:g} (Newcombe-Wilson interval of the difference, n={acc.trials})"
    )
    message = (
        f"test accuracy {acc.value:.3f} is significantly more than {margin:g} below retrain's {retrain_acc.value:.3f} "
        f"(lower bound of the gap {test.lower_bound:.3f})"
        if test.rejected
        else ""
    )
    details = {
        "accuracy_gap": test.difference,
        "gap_lower_bound": test.lower_bound,
        "original_accuracy": clean_test_accuracy(ctx, ctx.fixture.original),
        "interval_95": list(acc.interval),
        "evidence": evidence.excess(retrain_acc, acc, margin, method="b"),
    }
    return CheckResult(
        check=CHECK.name,
        metric=CHECK.metric,
        unit=CHECK.unit,
        verdict="fail" if test.rejected else "pass",
        score=acc.value,
        stderr=acc.stderr,
        reference=retrain_acc.value,
        reference_stderr=retrain_acc.stderr,
        direction=CHECK.direction,
        rule=rule,
        message=message,
        details=details,
    )
