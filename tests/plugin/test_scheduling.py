"""The xdist scheduler: cases stay whole, unlearners stay on few workers, no worker idles while another
has cases queued, a crashed worker's tests go elsewhere (simulated with fake workers through xdist's
scheduler protocol; `test_plugin.py` runs real xdist)."""

from __future__ import annotations

import heapq

import pytest

from unlearn_audit.plugin.scheduling import AuditCaseScheduler, case_spec, case_unit, choose_unit

SPECS = ("m:NoOp", "m:GradientDescent", "m:GradientAscent", "m:NegGradPlus")
SCENARIOS = ("backdoor", "gaussian", "gradient_canceling", "witches_brew")
CHECKS = ("budget_respected", "targeted_removed", "utility_preserved", "relearning_resistant")


def test_choose_unit_prefers_own_then_plain_then_fresh_then_busiest() -> None:
    spec_of = {"a1": "A", "a2": "A", "b1": "B", "b2": "B", "b3": "B", "c1": "C", "t": None}.get
    assert choose_unit(["b1", "t", "a1"], spec_of, own={"A"}, others={"B"}) == "a1"
    assert choose_unit(["b1", "c1", "t"], spec_of, own={"A"}, others={"B"}) == "t"
    assert choose_unit(["b1", "c1"], spec_of, own={"A"}, others={"B"}) == "c1"
    # everything left belongs to unlearners other workers run: help the one with the most cases left
    assert choose_unit(["c1", "b1", "b2", "b3"], spec_of, own={"A"}, others={"B", "C"}) == "b1"


def test_units_and_specs_from_node_ids() -> None:
    nodeid = "conformance/test_targeted_removed.py::test_targeted_removed[m:GradientDescent-tiny-backdoor-seed0]"
    assert case_unit(nodeid, "conformance") == "case:m:GradientDescent-tiny-backdoor-seed0"
    assert case_spec(case_unit(nodeid, "conformance"), SPECS, "tiny") == "m:GradientDescent"
    assert case_unit("tests/test_other.py::test_plain[1]", "conformance") == "tests/test_other.py::test_plain[1]"
    assert case_spec("tests/test_other.py::test_plain[1]", SPECS, "tiny") is None
    # the longest matching spec wins when one spec is a prefix of another
    assert case_spec("case:m:NoOp-x-tiny-gaussian-seed0", ("m:NoOp", "m:NoOp-x"), "tiny") == "m:NoOp-x"


class FakeNode:
    def __init__(self, name: str) -> None:
        self.name = name
        self.shutting_down = False
        self.queue: list[int] = []

    def send_runtest_some(self, indices: list[int]) -> None:
        assert not self.shutting_down, "no work after shutdown"
        self.queue.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True


def nodeids() -> list[str]:
    # as pytest collects them: test file by test file, each parametrized over the cases
    return [
        f"conformance/test_{check}.py::test_{check}[{spec}-tiny-{scenario}-seed0]"
        for check in CHECKS
        for spec in SPECS
        for scenario in SCENARIOS
    ] + ["tests/test_other.py::test_plain"]


def scheduler() -> AuditCaseScheduler:
    return AuditCaseScheduler(lambda n: case_unit(n, "conformance"), lambda u: case_spec(u, SPECS, "tiny"))


def simulate(cost_per_test: dict[str, float], start_cost: float, workers: int = 2) -> tuple[dict, dict[str, float]]:
    """Run the scheduler against fake workers with a cost model; returns who ran what, and each worker's
    finishing time (a worker pays `start_cost` the first time it runs a case of an unlearner). A worker
    holds back its last test until it gets more or is shut down, as an xdist worker does."""
    sched = scheduler()
    nodes = [FakeNode(f"gw{i}") for i in range(workers)]
    collection = nodeids()
    for node in nodes:
        sched.add_node(node)
    for node in nodes:
        sched.add_node_collection(node, collection)
    assert sched.collection_is_completed
    sched.schedule()
    ran: dict[str, str] = {}
    started: dict[str, set[str]] = {n.name: set() for n in nodes}
    clock = [(0.0, i) for i in range(workers)]
    finished: dict[str, float] = {}
    while clock:
        now, i = heapq.heappop(clock)
        node = nodes[i]
        if not node.queue or (len(node.queue) == 1 and not node.shutting_down):
            assert node.shutting_down or sched.has_pending, f"{node.name} waits for work that never comes"
            finished[node.name] = now
            continue
        index = node.queue.pop(0)
        nodeid = collection[index]
        assert nodeid not in ran, f"{nodeid} ran twice"
        ran[nodeid] = node.name
        spec = next((s for s in SPECS if f"[{s}-" in nodeid), None)
        cost = cost_per_test.get(spec, 0.1) if spec else 0.1
        if spec and spec not in started[node.name]:
            started[node.name].add(spec)
            cost += start_cost
        sched.mark_test_complete(node, index)
        heapq.heappush(clock, (now + cost, i))
    assert set(ran) == set(collection), "every test ran once"
    assert sched.tests_finished and not sched.has_pending
    return ran, finished


COSTS = {"m:NoOp": 0.05, "m:GradientDescent": 1.0, "m:GradientAscent": 1.0, "m:NegGradPlus": 1.0}


def test_cases_stay_whole_and_a_free_worker_helps_instead_of_idling() -> None:
    ran, finished = simulate(COSTS, start_cost=2.0)
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
    _, finished = simulate(COSTS, start_cost=2.0)
    whole = max(0.05 * 16 + 1.0 * 16 + 4.0, 1.0 * 32 + 4.0)  # {NoOp, GA} and {GD, NegGrad+}
    assert max(finished.values()) < whole - 4.0, finished


def test_one_worker_runs_everything() -> None:
    ran, _ = simulate(COSTS, start_cost=2.0, workers=1)
    assert set(ran.values()) == {"gw0"}


def test_a_crashed_worker_returns_its_running_test_and_requeues_the_rest() -> None:
    sched = scheduler()
    a, b = FakeNode("gw0"), FakeNode("gw1")
    collection = nodeids()
    for node in (a, b):
        sched.add_node(node)
        sched.add_node_collection(node, collection)
    sched.schedule()
    lost = sorted(a.queue)
    crashed = sched.remove_node(a)
    assert crashed == collection[lost[0]], "the first pending test is the one that was running"
    queued = {i for indices in sched.queue.values() for i in indices}
    assert set(lost[1:]) <= queued, "the rest of its tests go back to the queue"
    assert lost[0] not in queued, "the crashing test is reported, not re-run"
    # and they are run by the remaining worker
    while sched.has_pending:
        index = b.queue.pop(0) if b.queue else None
        assert index is not None, "work is left that nobody got"
        sched.mark_test_complete(b, index)
    assert not sched.queue


def test_a_worker_that_collected_other_tests_is_an_error() -> None:
    sched = scheduler()
    a, b = FakeNode("gw0"), FakeNode("gw1")
    sched.add_node(a)
    sched.add_node(b)
    sched.add_node_collection(a, nodeids())
    with pytest.raises(RuntimeError, match="collected other tests"):
        sched.add_node_collection(b, nodeids()[:-1])


def test_a_late_worker_gets_work_and_nothing_is_sent_before_every_collection() -> None:
    sched = scheduler()
    a, b = FakeNode("gw0"), FakeNode("gw1")
    sched.add_node(a)
    sched.add_node(b)
    sched.add_node_collection(a, nodeids())
    sched.schedule()
    assert not sched.collection_is_completed and a.queue == [], "waits for every started worker"
    sched.add_node_collection(b, nodeids())
    sched.schedule()
    assert a.queue and b.queue
    late = FakeNode("gw2")
    sched.add_node(late)
    sched.add_node_collection(late, nodeids())
    sched.schedule()
    assert late.queue, "a worker that joins later takes cases from the queue"
