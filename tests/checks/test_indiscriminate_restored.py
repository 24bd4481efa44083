"""`indiscriminate_restored` on exact counts: the poisoned original gets 200 of 400 test examples right
(0.50), retrain 360 (0.90); a method must be back within 5 points of retrain, one-sided at alpha 0.01."""

from __future__ import annotations

import math

import pytest
from synthetic_checks import accuracy_models, context, scenario_fixture

from unlearn_audit.checks import evidence
from unlearn_audit.checks.indiscriminate_restored import damage_repaired, run

N, C = 400, 5
OPTIONS = {"alpha": 0.01, "margin": 0.05}


@pytest.fixture(scope="module")
def models():
    names = ("retrain", "original", "repaired", "noop", "half", "most", "mild_original", "worse")
    counts = (360, 200, 360, 200, 280, 352, 350, 120)
    tensors, built = accuracy_models(N, C, *counts, seed=1)
    return tensors, dict(zip(names, built))


def judge(models, method: str, original: str = "original", options=OPTIONS):
    tensors, m = models
    fixture = scenario_fixture(tensors, m[original], m["retrain"], kind="gradient_canceling", num_classes=C)
    return run(context(fixture, m[method], options))


def test_damage_repaired_is_the_fraction_of_the_lost_accuracy_won_back() -> None:
    assert damage_repaired(0.5, 0.5, 0.9) == 0.0  # nothing done
    assert damage_repaired(0.9, 0.5, 0.9) == 1.0  # as retraining
    assert damage_repaired(0.7, 0.5, 0.9) == pytest.approx(0.5)
    assert damage_repaired(0.3, 0.5, 0.9) == pytest.approx(-0.5)  # unlearning made it worse
    assert math.isnan(damage_repaired(0.8, 0.9, 0.9))  # no damage to repair
    assert math.isnan(damage_repaired(0.8, 0.95, 0.9))


def test_a_model_restored_like_retrain_passes_with_full_power(models) -> None:
    r = judge(models, "repaired")
    assert r.verdict == "pass" and r.message == ""
    assert r.score == pytest.approx(0.9) and r.reference == pytest.approx(0.9) and r.direction == "higher_is_better"
    assert r.details["damage_repaired"] == pytest.approx(1.0) and r.details["original_accuracy"] == 0.5
    # the poisoned original is 40 points below retrain: the test fails it with certainty
    assert r.details["power"] > 0.999 and r.details["power_against"] == "the poisoned original"


def test_doing_nothing_fails_and_says_none_of_the_damage_was_repaired(models) -> None:
    r = judge(models, "noop")
    assert r.verdict == "fail"
    assert "the indiscriminate poison's damage is still there: test accuracy 0.500 vs retrain 0.900" in r.message
    assert "poisoned original 0.500, 0% of the damage repaired" in r.message
    assert r.details["accuracy_gap"] == pytest.approx(0.4) and r.details["gap_lower_bound"] > 0.05


def test_half_the_damage_repaired_is_not_removal(models) -> None:
    # a 20-point gap, four times the margin: far beyond what 400 examples resolve (about 10 points)
    r = judge(models, "half")
    assert r.verdict == "fail" and "50% of the damage repaired" in r.message
    assert r.details["gap_lower_bound"] > 0.1


def test_a_small_shortfall_inside_the_margin_passes(models) -> None:
    r = judge(models, "most")  # 0.88 vs 0.90: 38 of the 40 lost points, 95%, won back
    assert r.verdict == "pass" and r.details["damage_repaired"] == pytest.approx(0.95)


def test_a_method_that_makes_things_worse_fails_with_negative_repair(models) -> None:
    r = judge(models, "worse")
    assert r.verdict == "fail" and r.details["damage_repaired"] == pytest.approx(-0.5)  # 0.30: lost half as much again
    assert "-50% of the damage repaired" in r.message


def test_a_pass_against_a_weak_poison_says_it_has_low_power(models) -> None:
    # the original is only 2.5 points below retrain (inside the margin): doing nothing passes, and says why
    r = judge(models, "mild_original", original="mild_original")
    assert r.verdict == "pass" and r.details["power"] < 0.01
    assert r.message.startswith("low power: 0.00 against the poisoned original")
    assert "no number of seeds up to 100 reaches 0.8" in r.message


def test_the_evidence_reproduces_the_verdict(models) -> None:
    for method in ("repaired", "noop", "half", "most"):
        r = judge(models, method)
        ev = r.details["evidence"]
        assert ev["kind"] == "excess" and ev["method"] == "b" and ev["a"] == [360, N]
        assert evidence.decide([ev], 0.01).rejected == (r.verdict == "fail")
