"""An xdist scheduler that keeps each audit case on one worker and each unlearner on as few workers as
it can (imported only under xdist).

Every worker that runs an unlearner's cases starts that unlearner's worker process (an interpreter
with torch: seconds of CPU), so handing out cases by unlearner saves those starts; handing out whole
unlearners leaves workers idle at the end when the unlearners cost different amounts (measured on 2
cores, four methods: one xdist worker idle for 7.6 s of a 28 s run). So a free worker takes, in this
order: a case of an unlearner it already runs, a test that is not an audit case, a case of an
unlearner no worker runs yet, and only then a case of an unlearner another worker runs (the one with
the most cases left), paying one more process start instead of idling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from xdist.scheduler import LoadScopeScheduling

from unlearn_audit.plugin.state import settings_key
from unlearn_audit.plugin.suite import CONFORMANCE_DIR

CONFORMANCE_DIR_NAME = CONFORMANCE_DIR.name
CASE_SCOPE_PREFIX = "unlearn-audit-case:"


def choose_scope(queue: Iterable[str], spec_of: Callable[[str], str | None], own: set[str], others: set[str]) -> str:
    """The queued scope a free worker should take next (the queue is never empty).

    `spec_of(scope)` is the scope's unlearner (None for a test that is not an audit case); `own` are the
    unlearners this worker already runs, `others` those that only other workers run.
    """
    scopes = list(queue)
    specs = {scope: spec_of(scope) for scope in scopes}
    for wanted in (lambda s: s in own, lambda s: s is None, lambda s: s not in others):
        for scope in scopes:
            if wanted(specs[scope]):
                return scope
    left: dict[str | None, int] = {}
    for scope in scopes:
        left[specs[scope]] = left.get(specs[scope], 0) + 1
    busiest = max(left, key=lambda spec: left[spec])
    return next(scope for scope in scopes if specs[scope] == busiest)


class AuditCaseScheduling(LoadScopeScheduling):
    """Scope = the case's parameter id ("spec-profile-scenario-seedN|seedsA-B[-budgetB]") for conformance
    tests, the node id itself (one test per unit) for anything else. The controller sees only node ids,
    so the id in brackets is the group key, and the unlearner is recognised as a prefix of it."""

    def _split_scope(self, nodeid: str) -> str:
        name = nodeid.rpartition("::")[2]
        if f"{CONFORMANCE_DIR_NAME}/test_" in nodeid.replace("\\\\", "/") or nodeid.startswith("test_"):
            if "[" in name and name.endswith("]"):
                return CASE_SCOPE_PREFIX + name[name.index("[") + 1 : -1]
        return nodeid

    def _assign_work_unit(self, node) -> None:  # type: ignore[no-untyped-def]
        """As LoadScopeScheduling's, but the unit is chosen by `choose_scope` instead of queue order."""
        own = {self._spec_of(scope) for scope in self.assigned_work.get(node, {})} - {None}
        others = {self._spec_of(scope) for other, work in self.assigned_work.items() if other is not node
                  for scope in work} - {None} - own
        scope = choose_scope(self.workqueue, self._spec_of, own, others)  # type: ignore[arg-type]
        self.workqueue.move_to_end(scope, last=False)
        super()._assign_work_unit(node)

    def _spec_of(self, scope: str) -> str | None:
        if not scope.startswith(CASE_SCOPE_PREFIX):
            return None
        case = scope[len(CASE_SCOPE_PREFIX):]
        settings = self.config.stash.get(settings_key, None)
        if settings is None:
            return case
        for spec in sorted(settings.unlearners, key=len, reverse=True):
            if case.startswith(f"{spec}-{settings.profile}-"):
                return spec
        return case
