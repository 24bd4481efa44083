"""Targeted poisons (Pawelczyk et al., Sec. 4.1): after unlearning, the attack must succeed no
more often than on the model retrained without the poisons. Score: attack success rate on
held-out triggered inputs, Wilson intervals, one-sided test of the excess over retrain."""

import pytest


@pytest.mark.audit_check("targeted_removed")
def test_targeted_removed(audit_case):
    audit_case.judge()
