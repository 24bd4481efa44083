"""The xdist scheduler: cases stay whole, unlearners stay on few workers, and no worker idles while
another has cases queued (simulated with fake workers; `test_plugin.py` runs real xdist)."""

from __future__ import annotations

import heapq
from collections import OrderedDict
from types import SimpleNamespace

import pytest

pytest.importorskip("xdist")

from unlearn_audit.plugin.state import settings_key  # noqa: E402
from unlearn_audit.plugin.xdist_scheduling import AuditCaseScheduling, choose_scope  # noqa: E402

SPECS = ("m:NoOp", "m:GradientDescent", "m:GradientAscent", "m:NegGradPlus")
SCENARIOS = ("backdoor", "gaussian", "gradient_canceling", "witches_brew")
CHECKS = ("budget_respected", "targeted_removed", "utility_preserved", "relearning_resistant")


def test_choose_scope_prefers_own_then_plain_then_fresh_then_busiest() -> None:
    spec_of = {"a1": "A", "a2": "A", "b1": "B", "b2": "B", "b3": "B", "c1": "C", "t": None}.get
    assert choose_scope(["b1", "t", "a1"], spec_of, own={"A"}, others={"B"}) == "a1"
    assert choose_scope(["b1", "c1", "t"], spec_of, own={"A"}, others={"B"}) == "t"
    assert choose_scope(["b1", "c1"], spec_of, own={"A"}, others={"B"}) == "c1"
    # everything left belongs to unlearners other workers run: help the one with the most cases left
    assert choose_scope(["c1", "b1", "b2", "b3"], spec_of, own={"A"}, others={"B", "C"}) == "b1"


class FakeNode:
    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.shutting_down = False
        self.queue: list[int] = []

    def send_runtest_some(self, indices: list[int]) -> None:
        self.queue.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True


def nodeids() -> list[str]:
    # as pytest collects them: test file by test file, each parametrized over the cases
    return [f"conformance/test_{check}.py::test_{check}[{spec}-tiny-{scenario}-seed0]"
            for check in CHECKS for spec in SPECS for scenario in SCENARIOS] + ["tests/test_other.py::test_plain"]


def simulate(cost_per_test: dict[str, float], start_cost: float, workers: int = 2) -> tuple[dict, dict[str, float]]:
    """Run the scheduler against fake workers with a cost model; returns who ran what, and each worker's
    finishing time (a worker pays `start_cost` the first time it runs a case of an unlearner)."""
    config = SimpleNamespace(stash={settings_key: SimpleNamespace(unlearners=list(SPECS), profile="tiny")},
                             option=SimpleNamespace(loadscopereorder=False), getvalue=lambda name: None)
    sched = AuditCaseScheduling.__new__(AuditCaseScheduling)
    sched.__dict__.update(numnodes=workers, collection=None, config=config, log=lambda *a: None,
                          workqueue=OrderedDict(), assigned_work={}, registered_collections={})
    nodes = [FakeNode(f"gw{i}") for i in range(workers)]
    collection = nodeids()
    for node in nodes:
        sched.add_node(node)
    for node in nodes:
        sched.add_node_collection(node, collection)
    sched.schedule()
    ran: dict[str, str] = {}
    started: dict[str, set[str]] = {n.gateway.id: set() for n in nodes}
    clock = [(0.0, i) for i in range(workers)]
    finished: dict[str, float] = {}
    while clock:
        now, i = heapq.heappop(clock)
        node = nodes[i]
        if not node.queue:
            finished[node.gateway.id] = now
            continue
        index = node.queue.pop(0)
        nodeid = collection[index]
        assert nodeid not in ran, f"{nodeid} ran twice"
        ran[nodeid] = node.gateway.id
        spec = next((s for s in SPECS if f"[{s}-" in nodeid), None)
        cost = cost_per_test.get(spec, 0.1) if spec else 0.1
        if spec and spec not in started[node.gateway.id]:
            started[node.gateway.id].add(spec)
            cost += start_cost
        sched.mark_test_complete(node, index)
        heapq.heappush(clock, (now + cost, i))
    assert set(ran) == set(collection), "every test ran once"
    return ran, finished


def test_cases_stay_whole_and_a_free_worker_helps_instead_of_idling() -> None:
    costs = {"m:NoOp": 0.05, "m:GradientDescent": 1.0, "m:GradientAscent": 1.0, "m:NegGradPlus": 1.0}
    ran, finished = simulate(costs, start_cost=2.0)
    by_case: dict[str, set[str]] = {}
    for nodeid, worker in ran.items():
        by_case.setdefault(nodeid.partition("[")[2], set()).add(worker)
    assert all(len(workers) == 1 for workers in by_case.values()), "all checks of a case on one worker"
    # each unlearner starts on one worker; at most one is shared, at the end
    by_spec = {spec: {w for n, w in ran.items() if f"[{spec}-" in n} for spec in SPECS}
    assert sum(len(w) > 1 for w in by_spec.values()) <= 1, by_spec
    # balanced to within one case (4 tests of one unlearner) plus one process start
    assert abs(finished["gw0"] - finished["gw1"]) <= 4 * 1.0 + 2.0, finished


def test_the_balance_beats_whole_unlearners_per_worker() -> None:
    costs = {"m:NoOp": 0.05, "m:GradientDescent": 1.0, "m:GradientAscent": 1.0, "m:NegGradPlus": 1.0}
    _, finished = simulate(costs, start_cost=2.0)
    whole = max(0.05 * 16 + 1.0 * 16 + 4.0, 1.0 * 32 + 4.0)  # {NoOp, GA} and {GD, NegGrad+}, as before
    assert max(finished.values()) < whole - 4.0, finished
