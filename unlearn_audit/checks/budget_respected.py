"""`budget_respected`: example-gradients spent, as counted by the harness, within the request's budget."""

from __future__ import annotations

from typing import Any

from unlearn_audit.checks import evidence
from unlearn_audit.checks.base import CheckContext, CheckInfo, CheckResult, Verdict

CHECK = CheckInfo(
    name="budget_respected",
    kind="other",
    metric="example-gradients spent",
    unit="example-gradients",
    reference="budget",
)


def run(ctx: CheckContext) -> CheckResult:
    """Judge the harness's own count of example-gradients against the budget (exact: no uncertainty)."""
    o = ctx.outcome
    rule = (
        f"fail if example-gradients counted by the harness exceed the budget "
        f"({o.budget.fraction:g} of the original training = {o.budget.example_gradients}), or if the harness's "
        "counter was removed or bypassed; an exact count, no uncertainty"
    )
    verdict: Verdict
    details: dict[str, Any] = {
        "fraction_used": o.example_gradients / max(1, o.budget.example_gradients),
        "seconds": o.seconds,
    }
    over = o.example_gradients > o.budget.example_gradients
    if o.exempt_from_budget:
        verdict, message = "skip", "exempt: this is the retrain-from-scratch reference"
    elif o.spend_problem:
        verdict = "fail"
        message = (
            f"the spend could not be verified: {o.spend_problem} during unlearn() "
            f"(the harness counted {o.example_gradients} example-gradients)"
        )
        details["spend_problem"] = o.spend_problem
    else:
        verdict = "fail" if over else "pass"
        message = (
            f"spent {o.example_gradients} example-gradients, budget {o.budget.example_gradients} (every example "
            "forwarded with autograd enabled counts, training or not: evaluate under torch.no_grad())"
            if over
            else ""
        )
    details["evidence"] = evidence.exact(verdict == "fail", float(o.example_gradients))
    return CheckResult(
        check=CHECK.name,
        metric=CHECK.metric,
        unit=CHECK.unit,
        verdict=verdict,
        score=float(o.example_gradients),
        stderr=0.0,
        reference=float(o.budget.example_gradients),
        reference_stderr=None,
        direction=CHECK.direction,
        rule=rule,
        message=message,
        details=details,
        reference_label=CHECK.reference,
    )
