"""`utility_preserved` on exact counts: one-hot test inputs and linear models with a chosen accuracy.

Retrain gets 360 of 400 test examples right (0.90); the rule fails a method whose accuracy is more
than 5 points below, one-sided at alpha 0.01 (Newcombe-Wilson lower bound of the gap above the margin).
"""

from __future__ import annotations

import math

import pytest
from synthetic_checks import Memo, accuracy_models, context, scenario_fixture

from unlearn_audit.checks import evidence
from unlearn_audit.checks.utility_preserved import accuracy_below_retrain, clean_test_accuracy, run
from unlearn_audit.stats import Proportion, excess_test

N, C, RETRAIN = 400, 4, 360
OPTIONS = {"alpha": 0.01, "margin": 0.05}


@pytest.fixture(scope="module")
def world():
    """Test tensors and models getting 360 (retrain), 300 (original) and then each count a test needs."""
    counts = (RETRAIN, 300, 360, 340, 300, 200, 0, 400)
    tensors, models = accuracy_models(N, C, *counts)
    fixture = scenario_fixture(tensors, models[1], models[0], num_classes=C)
    return fixture, dict(zip(("retrain", "original", *map(str, counts[2:])), models))


def judge(world, model: str, options=OPTIONS, memo: Memo | None = None):
    fixture, models = world
    return run(context(fixture, models[model], options, memo=memo))


def test_the_synthetic_models_have_the_accuracy_they_were_built_for(world) -> None:
    fixture, models = world
    ctx = context(fixture, models["340"], OPTIONS)
    assert clean_test_accuracy(ctx, models["retrain"]) == pytest.approx(0.9)
    assert clean_test_accuracy(ctx, models["340"]) == pytest.approx(0.85)
    assert clean_test_accuracy(ctx, models["400"]) == 1.0


def test_a_model_as_accurate_as_retrain_passes(world) -> None:
    r = judge(world, "360")
    assert r.verdict == "pass" and r.message == ""
    assert r.score == 0.9 and r.reference == 0.9 and r.direction == "higher_is_better"
    assert r.stderr == pytest.approx(math.sqrt(0.9 * 0.1 / N)) and r.reference_stderr == r.stderr
    assert r.details["accuracy_gap"] == 0.0 and r.details["gap_lower_bound"] < 0
    assert r.details["original_accuracy"] == 0.75
    lo, hi = r.details["interval_95"]
    assert lo < 0.9 < hi
    assert "n=400" in r.rule and "alpha=0.01" in r.rule and "0.05" in r.rule


def test_a_destroyed_model_fails_with_both_accuracies_in_the_message(world) -> None:
    r = judge(world, "200")
    assert r.verdict == "fail"
    assert r.details["accuracy_gap"] == pytest.approx(0.4) and r.details["gap_lower_bound"] > 0.3
    assert "test accuracy 0.500 is significantly more than 0.05 below retrain's 0.900" in r.message
    assert "lower bound of the gap 0.3" in r.message
    zero = judge(world, "0")
    assert zero.verdict == "fail" and zero.score == 0.0


def test_a_gap_well_beyond_the_margin_fails_and_one_at_the_margin_passes(world) -> None:
    # 15 points below: three times the margin, the lower bound of the gap (about 0.088) is above it.
    assert judge(world, "300").verdict == "fail"
    # exactly the margin below: H0 (gap <= margin) holds, never a failure
    at = judge(world, "340")
    assert at.verdict == "pass" and at.details["accuracy_gap"] == pytest.approx(0.05)


def test_a_better_model_than_retrain_passes(world) -> None:
    r = judge(world, "400")
    assert r.verdict == "pass" and r.details["accuracy_gap"] == pytest.approx(-0.1)


def test_the_options_set_the_rule(world) -> None:
    # a 15-point gap passes a rule allowing 20 points
    loose = judge(world, "300", {"alpha": 0.01, "margin": 0.2})
    assert loose.verdict == "pass" and "more than 0.2" in loose.rule
    # margin 0: a 15-point gap is far beyond the resolution of 400 examples
    assert judge(world, "300", {"alpha": 0.01, "margin": 0.0}).verdict == "fail"
    # defaults: alpha 0.01, margin 0.05
    assert judge(world, "300", {}).rule == judge(world, "300").rule


def test_the_shared_test_and_the_evidence_agree_with_the_verdict(world) -> None:
    fixture, models = world
    retrain_acc, acc, test, alpha, margin = accuracy_below_retrain(context(fixture, models["300"], OPTIONS))
    assert (retrain_acc, acc, alpha, margin) == (Proportion(360, N), Proportion(300, N), 0.01, 0.05)
    assert test == excess_test(Proportion(360, N), Proportion(300, N), 0.05, 0.01)
    for name in ("360", "340", "300", "200"):
        r = judge(world, name)
        d = evidence.decide([r.details["evidence"]], 0.01)
        assert d.rejected == (r.verdict == "fail")
        assert d.score == r.score and d.reference == r.reference  # method="b": the method is the second count


def test_measurements_are_memoised_per_model(world) -> None:
    memo = Memo()
    judge(world, "300", memo=memo)
    judge(world, "340", memo=memo)
    # retrain's and the original's correctness measured once for both methods
    assert memo.computed.count("clean_test_correct") == 4
