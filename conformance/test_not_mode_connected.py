"""Linear mode connectivity (Siddiqui et al.): the unlearned model must be separated from the
poisoned original by a loss barrier on the straight path between them, as a model retrained from
scratch is. Score: test-loss barrier along the interpolation path, against retrain's; the L2
distance and the accuracy and poison curves along the path are reported."""

import pytest


@pytest.mark.audit_check("not_mode_connected")
def test_not_mode_connected(audit_case):
    audit_case.judge()
