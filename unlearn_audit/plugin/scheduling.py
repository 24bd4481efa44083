"""The pytest-xdist scheduler of an audit: each case's checks on one worker, each unlearner on few.

Returned by the documented `pytest_xdist_make_scheduler` hook, and written against xdist's
documented scheduler protocol only (`xdist.scheduler.protocol.Scheduling`: add_node,
add_node_collection, schedule, mark_test_complete, remove_node, ... and the worker's
`send_runtest_some` / `shutdown`), so that no private xdist method is overridden. (xdist's own
`--dist loadgroup` would group cases by their `xdist_group` mark, but with pytest 9 it no longer does:
measured with xdist 3.8, the tests of one group ran on both workers.)

Work units: an audit case (all checks of one unlearner x scenario x seeds x budget share their
`unlearn()` calls, so they must run in one process), or one test that is not an audit case. Every
worker that runs an unlearner's cases starts that unlearner's process (seconds of CPU), so a free
worker takes, in order: a case of an unlearner it already runs, a test that is not an audit case, a
case of an unlearner no worker runs yet, and only then a case of an unlearner another worker runs
(the one with the most cases left): it pays one more process start instead of idling.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

PENDING_BEFORE_MORE = 2  # a worker holds back its last test until it gets more (or is shut down)


def choose_unit(queue: Iterable[str], spec_of: Callable[[str], str | None], own: set[str], others: set[str]) -> str:
    """The queued unit a free worker should take next (the queue is never empty).

    `spec_of(unit)` is the unit's unlearner (None for a test that is not an audit case); `own` are the
    unlearners this worker already runs, `others` those that only other workers run.
    """
    units = list(queue)
    specs = {unit: spec_of(unit) for unit in units}
    for wanted in (lambda s: s in own, lambda s: s is None, lambda s: s not in others):
        for unit in units:
            if wanted(specs[unit]):
                return unit
    left: dict[str | None, int] = {}
    for unit in units:
        left[specs[unit]] = left.get(specs[unit], 0) + 1
    busiest = max(left, key=lambda spec: left[spec])
    return next(unit for unit in units if specs[unit] == busiest)


class AuditCaseScheduler:
    """Implements xdist's `Scheduling` protocol with whole cases as units (see the module docstring).

    `unit_of(nodeid)` names a test's unit; `spec_of(unit)` its unlearner (None: not an audit case).
    Workers may join at any time: each gets work as soon as its collection is in.
    """

    def __init__(self, unit_of: Callable[[str], str], spec_of: Callable[[str], str | None]) -> None:
        self.unit_of = unit_of
        self.spec_of = spec_of
        self.collections: dict[Any, list[str]] = {}  # worker -> its collection (None until it reports)
        self.collection: list[str] | None = None
        self.queue: OrderedDict[str, list[int]] = OrderedDict()  # unit -> its test indices, not yet assigned
        self.pending: dict[Any, dict[int, str]] = {}  # worker -> index -> unit, assigned and not yet done
        self.units_run: dict[Any, set[str]] = {}  # worker -> the unlearners it has run

    # -- the protocol's properties --------------------------------------------------------------
    @property
    def nodes(self) -> list[Any]:
        """xdist's Scheduling protocol: the worker nodes known to the scheduler."""
        return list(self.collections)

    @property
    def collection_is_completed(self) -> bool:
        """xdist's Scheduling protocol: whether every node has reported its collection."""
        return bool(self.collections) and all(c is not None for c in self.collections.values())

    @property
    def tests_finished(self) -> bool:
        """xdist's Scheduling protocol: whether every scheduled test has run."""
        if not self.collection_is_completed or self.queue:
            return False
        return all(len(p) < PENDING_BEFORE_MORE for p in self.pending.values())

    @property
    def has_pending(self) -> bool:
        """xdist's Scheduling protocol: whether tests are waiting to be sent."""
        return bool(self.queue) or any(self.pending.values())

    # -- workers come and go ----------------------------------------------------------------------
    def add_node(self, node: Any) -> None:
        """xdist's Scheduling protocol: a node joined."""
        self.collections[node] = None  # type: ignore[assignment]
        self.pending[node] = {}
        self.units_run[node] = set()

    def add_node_collection(self, node: Any, collection: Sequence[str]) -> None:
        """xdist's Scheduling protocol: a node's collected test ids."""
        collected = list(collection)
        if self.collection is None:
            self.collection = collected
            for index, nodeid in enumerate(collected):
                self.queue.setdefault(self.unit_of(nodeid), []).append(index)
        elif collected != self.collection:
            raise RuntimeError(
                f"pytest-xdist worker {getattr(getattr(node, 'gateway', None), 'id', node)} collected other tests "
                "than the first worker: the audit cannot be split over workers whose collections differ"
            )
        self.collections[node] = collected

    def remove_node(self, node: Any) -> str | None:
        """A worker left; its unfinished tests go back to the queue. Returns the test it was running
        when it crashed (xdist reports that one as failed), None when it had nothing left."""
        pending = self.pending.pop(node, {})
        self.collections.pop(node, None)
        self.units_run.pop(node, None)
        if not pending or self.collection is None:
            return None
        indices = sorted(pending)
        crashed, rest = indices[0], indices[1:]
        for index in rest:  # back at the front, in their unit, for another worker
            self.queue.setdefault(pending[index], []).append(index)
            self.queue.move_to_end(pending[index], last=False)
        return self.collection[crashed]

    # -- work -------------------------------------------------------------------------------
    def schedule(self) -> None:
        """xdist's Scheduling protocol: hand out the first units once collection is complete."""
        if not self.collection_is_completed:
            return
        for node in self.nodes:
            self._give_work(node)

    def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
        """xdist's Scheduling protocol: a test finished on a node."""
        self.pending[node].pop(item_index, None)
        self._give_work(node)

    def mark_test_pending(self, item: str) -> None:
        """xdist's Scheduling protocol: a test goes back to the queue."""
        raise NotImplementedError("the audit scheduler does not re-run tests")

    def remove_pending_tests_from_node(self, node: Any, indices: Sequence[int]) -> None:
        """xdist's Scheduling protocol: take tests back from a node."""
        raise NotImplementedError("the audit scheduler does not steal work between workers")

    def _give_work(self, node: Any) -> None:
        """Top the worker up with whole units while it has fewer than two tests left; shut it down when
        nothing is left to give."""
        if getattr(node, "shutting_down", False) or self.collections.get(node) is None:
            return
        while self.queue and len(self.pending[node]) < PENDING_BEFORE_MORE:
            others = set().union(*(runs for other, runs in self.units_run.items() if other is not node))
            own = self.units_run[node]
            unit = choose_unit(self.queue, self.spec_of, own, others - own)
            indices = self.queue.pop(unit)
            spec = self.spec_of(unit)
            if spec is not None:
                own.add(spec)
            self.pending[node].update({index: unit for index in indices})
            node.send_runtest_some(indices)
        if not self.queue:
            node.shutdown()


def case_unit(nodeid: str, conformance_dir_name: str) -> str:
    """A conformance test's unit is its parameter id (the case); any other test is its own unit."""
    name = nodeid.rpartition("::")[2]
    in_suite = f"{conformance_dir_name}/test_" in nodeid.replace("\\", "/") or nodeid.startswith("test_")
    if in_suite and "[" in name and name.endswith("]"):
        return "case:" + name[name.index("[") + 1 : -1]
    return nodeid


def case_spec(unit: str, specs: Iterable[str], profile: str) -> str | None:
    """The unlearner of a case unit (recognised as a prefix of the case id), None for other tests."""
    if not unit.startswith("case:"):
        return None
    case = unit[len("case:") :]
    for spec in sorted(specs, key=len, reverse=True):
        if case.startswith(f"{spec}-{profile}-"):
            return spec
    return case
