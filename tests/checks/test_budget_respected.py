"""`budget_respected` on synthetic outcomes: an exact count against the budget, no statistics."""

from __future__ import annotations

import pytest
import torch
from synthetic_checks import context, scenario_fixture
from torch import nn

from unlearn_audit.checks import evidence
from unlearn_audit.checks.budget_respected import run
from unlearn_audit.protocol import Budget


@pytest.fixture(scope="module")
def fixture():
    torch.manual_seed(0)
    return scenario_fixture({}, nn.Linear(4, 3), nn.Linear(4, 3))


def judge(fixture, spent: int, budget: int = 1000, **kw):
    return run(context(fixture, nn.Linear(4, 3), example_gradients=spent, budget=Budget(0.1, budget), **kw))


def test_a_method_within_its_budget_passes_with_the_exact_count(fixture) -> None:
    r = judge(fixture, 250)
    assert r.verdict == "pass" and r.message == ""
    assert (r.score, r.stderr, r.reference, r.reference_stderr) == (250.0, 0.0, 1000.0, None)
    assert r.reference_label == "budget" and r.direction == "lower_is_better"
    assert r.details["fraction_used"] == pytest.approx(0.25)
    assert r.details["evidence"] == evidence.exact(False, 250.0)
    assert "0.1 of the original training = 1000" in r.rule


def test_spending_exactly_the_budget_passes_and_one_more_fails(fixture) -> None:
    at = judge(fixture, 1000)
    assert at.verdict == "pass" and at.details["fraction_used"] == pytest.approx(1.0)
    over = judge(fixture, 1001)
    assert over.verdict == "fail"
    assert over.message.startswith("spent 1001 example-gradients, budget 1000 (every example forwarded with autograd")
    assert over.details["evidence"] == evidence.exact(True, 1001.0)
    assert "FAIL" in over.explain() and "(budget)" in over.explain()


def test_a_far_overspend_fails(fixture) -> None:
    r = judge(fixture, 10_000)  # the whole original training again: what retraining from scratch costs
    assert r.verdict == "fail" and r.details["fraction_used"] == pytest.approx(10.0)


def test_a_removed_counter_fails_even_under_budget(fixture) -> None:
    r = judge(fixture, 3, spend_problem="the harness's counting hooks were removed")
    assert r.verdict == "fail"
    assert "could not be verified: the harness's counting hooks were removed" in r.message
    assert "(the harness counted 3 example-gradients)" in r.message
    assert r.details["spend_problem"] == "the harness's counting hooks were removed"
    assert r.details["evidence"]["failed"] is True


def test_the_retrain_reference_is_exempt_whatever_it_spends(fixture) -> None:
    r = judge(fixture, 50_000, exempt_from_budget=True)
    assert r.verdict == "skip" and "retrain-from-scratch reference" in r.message
    assert r.score == 50_000.0 and r.details["evidence"]["failed"] is False  # the count is still reported


def test_a_zero_budget_allows_nothing(fixture) -> None:
    free = judge(fixture, 0, budget=0)
    assert free.verdict == "pass" and free.details["fraction_used"] == 0.0  # no division by zero
    one = judge(fixture, 1, budget=0)
    assert one.verdict == "fail" and one.details["fraction_used"] == 1.0


def test_the_evidence_pools_as_the_worst_seed(fixture) -> None:
    seeds = [judge(fixture, 900).details["evidence"], judge(fixture, 1200).details["evidence"]]
    decision = evidence.decide(seeds, 0.01)
    assert decision.rejected and decision.score == 1200.0 and "1 of 2 seeds failed" in decision.summary
    assert not evidence.decide(seeds[:1] * 3, 0.01).rejected
