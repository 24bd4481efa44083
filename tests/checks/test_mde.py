"""The minimal detectable effect of every test kind: the test run on simulated evidence at the stated MDE
fails with probability about 0.8 (checked by simulation with the suite's own `decide`), less often below it,
and the MDE shrinks as seeds are pooled."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats as st

from unlearn_audit.checks import evidence
from unlearn_audit.checks.base import CheckResult
from unlearn_audit.checks.evidence import decide
from unlearn_audit.checks.mde import NONE_DETECTED, minimal_detectable_effect, with_mde
from unlearn_audit.stats import Proportion

DRAWS = 4000  # simulated runs per power estimate: binomial sd of 0.8 is 0.006


def rejection_rate(make: object, draws: int = DRAWS) -> float:
    return sum(decide(make(i), ALPHA).rejected for i in range(draws)) / draws  # type: ignore[operator]


ALPHA = 0.0025


def test_unit_normal_mde_is_the_mean_gus_with_power_0_8() -> None:
    n = 150
    found = minimal_detectable_effect([evidence.unit_normal(0.0, n)], ALPHA)
    assert found is not None and found.reference == 0.0
    closed = (st.norm.isf(ALPHA / 2) + st.norm.ppf(0.8)) / math.sqrt(n)  # the far tail adds almost nothing
    assert found.value == pytest.approx(closed, rel=1e-3)
    rng = np.random.default_rng(0)
    rate = rejection_rate(lambda i: [evidence.unit_normal(float(rng.normal(found.value, 1, n).sum()), n)])
    assert 0.77 < rate < 0.83
    half = rejection_rate(lambda i: [evidence.unit_normal(float(rng.normal(found.value / 2, 1, n).sum()), n)])
    assert half < 0.35


def test_excess_mde_for_attack_success_is_exact_binomial_power_at_the_reference() -> None:
    n, ref_hits = 324, 3
    ref = Proportion(ref_hits, n)
    found = minimal_detectable_effect([evidence.excess(Proportion(0, n), ref, 0.05, method="a")], ALPHA)
    assert found is not None and found.reference == pytest.approx(ref.value)
    assert 0.05 < found.value < 0.15
    rng = np.random.default_rng(1)
    p = ref.value + found.value
    rate = rejection_rate(lambda i: [evidence.excess(Proportion(int(rng.binomial(n, p)), n), ref, 0.05, "a")])
    assert 0.77 < rate < 0.86  # exact power 0.8 (a discrete count can only overshoot)
    below = ref.value + found.value - 0.03
    assert rejection_rate(lambda i: [evidence.excess(Proportion(int(rng.binomial(n, below)), n), ref, 0.05, "a")]) < 0.6


def test_excess_mde_for_accuracy_counts_the_method_below_the_reference() -> None:
    n = 360
    retrain = Proportion(350, n)
    found = minimal_detectable_effect([evidence.excess(retrain, Proportion(n, n), 0.05, method="b")], ALPHA)
    assert found is not None and found.reference == pytest.approx(retrain.value)
    rng = np.random.default_rng(2)
    q = retrain.value - found.value
    rate = rejection_rate(lambda i: [evidence.excess(retrain, Proportion(int(rng.binomial(n, q)), n), 0.05, "b")])
    assert 0.77 < rate < 0.86


def population_values(mean: float, sd: float, n: int) -> list[float]:
    """n values with exactly this mean and (sample) sd, spread as normal quantiles."""
    z = st.norm.ppf((np.arange(n) + 0.5) / n)
    z = (z - z.mean()) / z.std(ddof=1)
    return [float(v) for v in mean + sd * z]


def test_population_mde_at_tiny_backdoor_k10_spread() -> None:
    """tiny's backdoor at k = 10: 25 clean models at 0.53 with sd 0.049 (seed 0); the method's model varies
    as theirs do. At alpha 0.01/4/3 (the one-seed default run) the MDE is below 0.25."""
    refs = population_values(0.53, 0.049, 25)
    level = 0.01 / 4 / 3
    found = minimal_detectable_effect([evidence.population(0.0, 324, refs, 0.0)], level)
    assert found is not None and found.reference == pytest.approx(0.53)
    assert 0.19 < found.value < 0.25
    rng = np.random.default_rng(3)
    value = 0.53 + found.value
    rate = (
        sum(
            decide([evidence.population(float(rng.normal(value, 0.049)), 324, refs, 0.0)], level).rejected
            for _ in range(DRAWS)
        )
        / DRAWS
    )
    assert 0.77 < rate < 0.83
    with_margin = minimal_detectable_effect([evidence.population(0.0, 324, refs, 0.05)], level)
    assert with_margin is not None and with_margin.value == pytest.approx(found.value + 0.05)


def test_population_mde_shrinks_when_seeds_are_pooled() -> None:
    rng = np.random.default_rng(4)
    seeds = [evidence.population(0.0, 324, [float(v) for v in rng.normal(0.53, 0.049, 25)], 0.0) for _ in range(5)]
    one = minimal_detectable_effect(seeds[:1], 0.01 / 4 / 3)
    five = minimal_detectable_effect(seeds, 0.01 / 4 / 3)
    assert one is not None and five is not None
    assert five.value < one.value / 1.8  # the spread of 5-seed means is about sd / sqrt(5)


def test_population_mde_is_none_detected_when_the_reference_leaves_no_room() -> None:
    found = minimal_detectable_effect([evidence.population(0.0, 324, population_values(0.97, 0.02, 9), 0.05)], ALPHA)
    assert found is not None and math.isinf(found.value)


def test_prediction_mde_matches_a_simulated_method_like_the_clean_models() -> None:
    k, refs = 10, population_values(0.40, 0.08, 24)
    sums = [r * k for r in refs]
    found = minimal_detectable_effect([evidence.prediction(0.0, k, sums)], ALPHA)
    assert found is not None and found.reference == pytest.approx(0.40)
    rng = np.random.default_rng(5)
    rate = (
        sum(
            decide([evidence.prediction(float(rng.normal(0.40 + found.value, 0.08)) * k, k, sums)], ALPHA).rejected
            for _ in range(DRAWS)
        )
        / DRAWS
    )
    assert 0.77 < rate < 0.83


def test_shortfall_mde_is_a_distance_below_the_reference() -> None:
    # not_mode_connected: threshold 0.25 x retrain's barrier 0.4 = 0.1, the method's barrier se 0.01.
    e = evidence.shortfall(0.1 - 0.3, 0.01, 0.3, 0.4)
    found = minimal_detectable_effect([e], ALPHA)
    assert found is not None and found.reference == pytest.approx(0.4)
    expected = 0.4 - 0.1 + (st.norm.isf(ALPHA) + st.norm.ppf(0.8)) * 0.01
    assert found.value == pytest.approx(expected)
    rng = np.random.default_rng(6)
    barrier = 0.4 - found.value
    rate = (
        sum(
            decide([evidence.shortfall(0.1 - float(rng.normal(barrier, 0.01)), 0.01, 0.0, 0.4)], ALPHA).rejected
            for _ in range(DRAWS)
        )
        / DRAWS
    )
    assert 0.77 < rate < 0.83


def test_any_reports_each_part_and_the_largest_finite_as_the_checks_mde() -> None:
    parts = {
        "k=0": evidence.population(0.0, 324, [0.0] * 25, 0.0),
        "k=10": evidence.population(0.0, 324, population_values(0.53, 0.049, 25), 0.0),
        "k=50": evidence.population(0.0, 324, population_values(0.999, 0.0005, 25), 0.05),
    }
    found = minimal_detectable_effect([evidence.any_of(parts, 3)], 0.01 / 4)
    assert found is not None and found.parts is not None
    assert found.parts["k=0"] < 0.05 and math.isinf(found.parts["k=50"])
    assert found.value == found.parts["k=10"]


def test_a_result_over_parts_shows_the_mde_of_the_part_its_score_is_of() -> None:
    """A relearning result shows one k's score: beside it that k's MDE, not the largest over k (which reads as
    'an excess below the MDE failed')."""
    from unlearn_audit.checks.pooling import pool
    from unlearn_audit.reports.collector import _mde

    def seed(excess_at_0: float) -> dict:
        return evidence.any_of(
            {
                "k=0": evidence.population(excess_at_0, 324, [0.0] * 25, 0.0),
                "k=10": evidence.population(0.53, 324, population_values(0.53, 0.049, 25), 0.0),
            },
            2,
        )

    results = [
        CheckResult(
            check="relearning_resistant",
            verdict="fail",
            score=0.06,
            stderr=0.013,
            reference=0.0,
            reference_stderr=0.0,
            direction="lower_is_better",
            rule="r",
            details={"evidence": seed(0.06)},
        )  # fmt: skip
        for _ in range(2)
    ]
    pooled = pool([0, 1], results, ALPHA)
    d = pooled.details
    assert pooled.verdict == "fail" and d["score_part"] == "k=0" and pooled.score == pytest.approx(0.06)
    assert d["mde_parts"]["k=0"] < 0.06 < d["mde"] == d["mde_parts"]["k=10"]
    assert _mde(d) == f"{d['mde_parts']['k=0']:.3f}"
    text = pooled.explain()
    assert f"MDE        {d['mde_parts']['k=0']:.3g} at k=0, as the score (the largest over the parts: " in text
    assert "smallest excess over the reference" in text
    higher = dataclasses.replace(pooled, direction="higher_is_better", details={"mde": 0.1})
    assert "MDE        0.1: the smallest shortfall below the reference" in higher.explain()


def test_with_mde_stores_infinity_as_none_with_a_note() -> None:
    result = CheckResult(
        check="x", verdict="pass", score=0.9, stderr=0.01, reference=0.97, reference_stderr=0.01,
        direction="lower_is_better", rule="r",
    )  # fmt: skip
    e = evidence.population(0.9, 324, population_values(0.97, 0.02, 9), 0.05)
    stored = with_mde(result, [e], ALPHA)
    assert stored.details["mde"] is None and stored.details["mde_note"] == NONE_DETECTED
    assert "MDE        none" in stored.explain()
    ok = with_mde(result, [evidence.unit_normal(0.0, 150)], ALPHA)
    assert ok.details["mde"] > 0 and "MDE" in ok.explain()


def test_an_exact_verdict_has_no_mde() -> None:
    assert minimal_detectable_effect([evidence.exact(False, 1.0)], ALPHA) is None
