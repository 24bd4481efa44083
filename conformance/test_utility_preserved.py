"""Utility: unlearning must not cost more than a stated margin of clean test accuracy relative
to retraining. Guards the removal checks against methods that simply destroy the model."""

import pytest


@pytest.mark.audit_check("utility_preserved")
def test_utility_preserved(audit_case):
    audit_case.judge()
