"""Relearning (Siddiqui et al.): fine-tuning the unlearned model on the retain set plus 0, a few
or more forget examples must not bring the poison back more than it does for a model retrained
from scratch under the identical attack. Score: the poison metric after relearning, per attacker
budget, against retrain's; Bonferroni over the budgets."""

import pytest


@pytest.mark.audit_check("relearning_resistant")
def test_relearning_resistant(audit_case):
    audit_case.judge()
