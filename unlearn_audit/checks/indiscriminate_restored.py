"""`indiscriminate_restored`: is the accuracy an indiscriminate poison destroyed back, as after retraining?

An indiscriminate poison (Gradient Canceling, Pawelczyk et al. Sec. 4.2) lowers the clean test
accuracy of the model trained on it; retraining without the poisons restores it. Score: clean
test accuracy of the unlearned model, with a Wilson interval; reference: retrain's on the same
test set. Also reported: the fraction of the poison's damage repaired,
(acc_unlearned - acc_original) / (acc_retrain - acc_original): 0 for doing nothing, 1 for
retraining, negative when unlearning made things worse.

Rule: fail if retrain's accuracy exceeds the method's by more than `margin`, one-sided at
`alpha` (Newcombe-Wilson interval of the difference), the same test as `utility_preserved`;
here it is a removal check (it asks whether the poison's effect is gone), and fixture validation
guarantees that the poisoned original itself fails it.
"""

from __future__ import annotations

from unlearn_audit.checks import evidence
from unlearn_audit.checks.base import CheckContext, CheckInfo, CheckResult
from unlearn_audit.checks.power import with_power
from unlearn_audit.checks.utility_preserved import accuracy_below_retrain, clean_test_correct
from unlearn_audit.stats import Proportion, excess_effect

CHECK = CheckInfo(
    name="indiscriminate_restored",
    kind="removal",
    metric="clean test accuracy",
    unit="fraction",
    direction="higher_is_better",
)


def damage_repaired(unlearned: float, original: float, retrain: float) -> float:
    """Fraction of the accuracy lost to the poison that unlearning won back (nan if there was no loss)."""
    damage = retrain - original
    return (unlearned - original) / damage if damage > 0 else float("nan")


def run(ctx: CheckContext) -> CheckResult:
    """Judge whether clean test accuracy, damaged by the indiscriminate poison, is restored to retrain's."""
    retrain_acc, acc, test, alpha, margin = accuracy_below_retrain(ctx)
    orig = clean_test_correct(ctx, ctx.fixture.original)
    o = Proportion(int(orig.sum()), len(orig))
    repaired = damage_repaired(acc.value, o.value, retrain_acc.value)
    rule = (
        f"fail if retrain's clean test accuracy exceeds the method's by more than {margin:g}, one-sided at "
        f"alpha={alpha:g} (Newcombe-Wilson interval of the difference, n={acc.trials})"
    )
    message = (
        f"the indiscriminate poison's damage is still there: test accuracy {acc.value:.3f} "
        f"vs retrain {retrain_acc.value:.3f} "
        f"(lower bound of the gap {test.lower_bound:.3f} > {margin:g}); poisoned original {o.value:.3f}, "
        f"{repaired:.0%} of the damage repaired"
        if test.rejected
        else ""
    )
    details = {
        "damage_repaired": repaired,
        "original_accuracy": o.value,
        "accuracy_gap": test.difference,
        "gap_lower_bound": test.lower_bound,
        "interval_95": list(acc.interval),
        "evidence": evidence.excess(retrain_acc, acc, margin, method="b"),
    }
    result = CheckResult(
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
    return with_power(result, excess_effect(retrain_acc, o, margin), alpha)
