"""Indiscriminate poisons (Pawelczyk et al., Sec. 4.2, Gradient Canceling): after unlearning, the
clean test accuracy the poison destroyed must be back, as it is on the model retrained without the
poisons. Score: clean test accuracy (Wilson interval) and the fraction of the damage repaired;
one-sided Newcombe-Wilson test of the shortfall against retrain."""

import pytest


@pytest.mark.audit_check("indiscriminate_restored")
def test_indiscriminate_restored(audit_case):
    audit_case.judge()
