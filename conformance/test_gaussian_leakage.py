"""Gaussian poisons (Pawelczyk et al., Sec. 4.3): after unlearning, the model must not depend
on the secret noise that was added to the forget-set inputs, exactly as a model retrained
without them does not. Score: mean Gaussian Unlearning Score, exact two-sided z-test."""

import pytest


@pytest.mark.audit_check("gaussian_leakage")
def test_gaussian_leakage(audit_case):
    audit_case.judge()
