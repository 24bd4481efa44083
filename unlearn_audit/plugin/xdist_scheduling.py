"""An xdist scheduler that keeps all checks of one audit case on one worker (imported only under xdist)."""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

from unlearn_audit.plugin.state import settings_key
from unlearn_audit.plugin.suite import CONFORMANCE_DIR

CONFORMANCE_DIR_NAME = CONFORMANCE_DIR.name


class AuditCaseScheduling(LoadScopeScheduling):
    """Scope = the case's parameter id ("spec-profile-scenario-seedN|seedsA-B[-budgetB]"), or its unlearner (see
    `_by_spec`), for conformance
    tests, the node id itself (one test per unit) for anything else. The controller sees only node
    ids, so the id in brackets is the group key; it is never parsed back into parameters."""

    def _split_scope(self, nodeid: str) -> str:
        name = nodeid.rpartition("::")[2]
        if f"{CONFORMANCE_DIR_NAME}/test_" in nodeid.replace("\\\\", "/") or nodeid.startswith("test_"):
            if "[" in name and name.endswith("]"):
                case = name[name.index("[") + 1 : -1]
                return "unlearn-audit-case:" + (self._spec_of(case) if self._by_spec() else case)
        return nodeid

    def _by_spec(self) -> bool:
        """With at least as many unlearners as workers, keep each unlearner on one worker: every worker
        then starts the worker processes of its own unlearners only (each costs an interpreter start
        with torch), instead of one per unlearner on every worker. Fewer unlearners than workers:
        spread their cases, or some workers would idle."""
        settings = self.config.stash.get(settings_key, None)
        return settings is not None and len(settings.unlearners) >= self.numnodes

    def _spec_of(self, case: str) -> str:
        settings = self.config.stash[settings_key]
        for spec in sorted(settings.unlearners, key=len, reverse=True):
            if case.startswith(f"{spec}-{settings.profile}-"):
                return spec
        return case
