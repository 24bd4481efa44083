"""An xdist scheduler that keeps all checks of one audit case on one worker (imported only under xdist)."""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

from unlearn_audit.plugin.suite import CONFORMANCE_DIR

CONFORMANCE_DIR_NAME = CONFORMANCE_DIR.name


class AuditCaseScheduling(LoadScopeScheduling):
    """Scope = the case's parameter id ("spec-profile-scenario-seedN[-budgetB]") for conformance
    tests, the node id itself (one test per unit) for anything else. The controller sees only node
    ids, so the id in brackets is the group key; it is never parsed back into parameters."""

    def _split_scope(self, nodeid: str) -> str:
        name = nodeid.rpartition("::")[2]
        if f"{CONFORMANCE_DIR_NAME}/test_" in nodeid.replace("\\\\", "/") or nodeid.startswith("test_"):
            if "[" in name and name.endswith("]"):
                return "unlearn-audit-case:" + name[name.index("[") + 1 : -1]
        return nodeid
