"""`budget_respected`: example-gradients spent, as counted by the harness, within the request's budget."""

from __future__ import annotations

from unlearn_audit.checks.base import CheckContext, CheckResult

NAME = "budget_respected"


def run(ctx: CheckContext) -> CheckResult:
    o = ctx.outcome
    rule = (
        f"fail if example-gradients counted by the harness exceed the budget "
        f"({o.budget.fraction:g} of the original training = {o.budget.example_gradients}); an exact count, no uncertainty"
    )
    details = {"fraction_used": o.example_gradients / max(1, o.budget.example_gradients), "seconds": o.seconds}
    if o.exempt_from_budget:
        return CheckResult(NAME, "skip", float(o.example_gradients), 0.0, float(o.budget.example_gradients), None,
                           "lower_is_better", rule, "exempt: this is the retrain-from-scratch reference", details)
    over = o.example_gradients > o.budget.example_gradients
    message = f"spent {o.example_gradients} example-gradients, budget {o.budget.example_gradients}" if over else ""
    return CheckResult(NAME, "fail" if over else "pass", float(o.example_gradients), 0.0,
                       float(o.budget.example_gradients), None, "lower_is_better", rule, message, details)
