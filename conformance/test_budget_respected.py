"""Budget: a method may spend at most the request's share of the original training compute
(10% by default, as in Pawelczyk et al.), counted by the harness in example-gradients.
The retrain-from-scratch reference is exempt (skipped, with the count still reported)."""

import pytest


@pytest.mark.audit_check("budget_respected")
def test_budget_respected(audit_case):
    audit_case.judge()
