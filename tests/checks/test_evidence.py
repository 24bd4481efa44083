"""The evidence a check records: on one seed, `decide` is the check's own test; edge cases of each kind.

(Pooling over several seeds is tested in test_pooling.py.)
"""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats as st

from unlearn_audit.checks import evidence
from unlearn_audit.jsonsafe import finite
from unlearn_audit.stats import Proportion, excess_test, population_excess_test, prediction_test, unit_normal_mean_test


def through_json(ev: dict) -> dict:
    """As a report stores it: strict JSON, non-finite numbers as null."""
    return json.loads(json.dumps(finite(ev)))


@pytest.mark.parametrize("scores", [[0.1, -0.3, 0.5, 0.2] * 10, [0.9, 1.1, 0.7, 1.3] * 10, [-1.0] * 40])
def test_unit_normal_on_one_seed_is_the_z_test(scores: list[float]) -> None:
    d = evidence.decide([evidence.unit_normal(sum(scores), len(scores))], 0.01)
    z = unit_normal_mean_test(scores, 0.01, alternative="two-sided")
    assert d.rejected == z.rejected and d.statistic == pytest.approx(z.z) and d.p_value == pytest.approx(z.p_value)
    assert d.score == pytest.approx(z.mean) and d.stderr == pytest.approx(1 / math.sqrt(40)) and d.reference is None


def test_unit_normal_one_sided_ignores_a_negative_mean() -> None:
    negative = evidence.unit_normal(-40.0, 40, alternative="greater")
    assert not evidence.decide([negative], 0.01).rejected
    assert evidence.decide([evidence.unit_normal(-40.0, 40)], 0.01).rejected  # two-sided: over-correction fails
    assert evidence.decide([evidence.unit_normal(40.0, 40, alternative="greater")], 0.01).rejected


def test_unit_normal_without_usable_scores_is_rejected() -> None:
    for ev in (evidence.unit_normal(0.0, 0), through_json(evidence.unit_normal(math.nan, 40))):
        d = evidence.decide([ev], 0.01)
        assert d.rejected and d.score is None and "no usable scores" in d.summary
    # one seed without scores spoils the pool: its absence of evidence is not evidence of removal
    pooled = evidence.decide([evidence.unit_normal(1.0, 40), through_json(evidence.unit_normal(math.nan, 40))], 0.01)
    assert pooled.rejected


def test_unit_normal_at_the_threshold() -> None:
    critical = float(st.norm.isf(0.005)) * math.sqrt(100)  # the sum of 100 scores at which p = alpha
    assert not evidence.decide([evidence.unit_normal(critical * 0.98, 100)], 0.01).rejected
    assert evidence.decide([evidence.unit_normal(critical * 1.02, 100)], 0.01).rejected


def test_excess_on_one_seed_is_the_newcombe_test_either_way_round() -> None:
    a, b = Proportion(90, 400), Proportion(40, 400)
    test = excess_test(a, b, 0.05, 0.01)
    mine_first = evidence.decide([evidence.excess(a, b, 0.05, "a")], 0.01)
    assert mine_first.rejected == test.rejected is True and mine_first.statistic == test.lower_bound
    assert (mine_first.score, mine_first.reference) == (a.value, b.value)
    assert mine_first.stderr == a.stderr and mine_first.reference_stderr == b.stderr
    mine_second = evidence.decide([evidence.excess(a, b, 0.05, "b")], 0.01)  # utility: the method's count is b
    assert mine_second.rejected and (mine_second.score, mine_second.reference) == (b.value, a.value)


def test_excess_of_exactly_the_margin_is_not_rejected() -> None:
    assert not evidence.decide([evidence.excess(Proportion(60, 400), Proportion(40, 400), 0.05, "a")], 0.01).rejected


def test_prediction_on_one_seed_is_the_prediction_test() -> None:
    refs = [0.2, 0.3, 0.25, 0.28, 0.22, 0.3, 0.27, 0.24]
    for score in (0.26, 0.5):
        d = evidence.decide([evidence.prediction(score * 4, 4, [r * 4 for r in refs])], 0.01)
        test = prediction_test(score, refs, 0.01)
        assert d.rejected == test.rejected and d.statistic == pytest.approx(test.t)
        assert d.reference == pytest.approx(test.reference_mean) and d.reference_stderr == pytest.approx(
            test.prediction_sd
        )
    assert evidence.decide([evidence.prediction(2.0, 4, [r * 4 for r in refs])], 0.01).rejected


def test_prediction_pools_only_the_clean_models_every_seed_has() -> None:
    eight = evidence.prediction(1.0, 4, [1.0 + 0.1 * j for j in range(8)])
    six = evidence.prediction(1.0, 4, [1.0 + 0.1 * j for j in range(6)])
    d = evidence.decide([eight, six], 0.01)
    assert d.reference == pytest.approx(sum(2.0 + 0.2 * j for j in range(6)) / 6 / 8)
    assert "vs 6 pooled clean models" in d.summary


def test_population_on_one_seed_is_the_population_test() -> None:
    pop = [0.50, 0.44, 0.58, 0.47, 0.62, 0.52, 0.55, 0.49, 0.53]
    for value in (0.55, 0.95):
        d = evidence.decide([evidence.population(value, 200, pop, 0.05)], 0.01)
        test = population_excess_test(value, pop, 0.05, 0.01, 200)
        assert d.rejected == test.rejected and d.statistic == pytest.approx(test.t) and d.score == value
    two = evidence.decide(
        [evidence.population(0.6, 200, pop, 0.05), evidence.population(0.4, 200, pop[::-1], 0.05)], 0.01
    )
    assert two.score == pytest.approx(0.5) and two.summary.startswith("pooled 0.500 vs 9 clean models")


def test_shortfall_with_and_without_uncertainty() -> None:
    assert evidence.decide([evidence.shortfall(0.1, 0.01, 0.0, 0.4)], 0.01).rejected  # z = 10
    assert not evidence.decide([evidence.shortfall(0.01, 0.01, 0.09, 0.4)], 0.01).rejected  # z = 1
    assert not evidence.decide([evidence.shortfall(-0.3, 0.01, 0.4, 0.4)], 0.01).rejected
    exact_short = evidence.decide([evidence.shortfall(0.1, 0.0, 0.0, 0.4)], 0.01)
    assert exact_short.rejected and exact_short.statistic == math.inf and exact_short.p_value is None
    at = evidence.decide([evidence.shortfall(0.0, 0.0, 0.1, 0.4)], 0.01)  # exactly at the threshold
    assert not at.rejected and at.statistic == -math.inf


def test_any_applies_bonferroni_over_its_parts() -> None:
    z = 2.75  # beyond 2.576 (alpha 0.01), short of 2.935 (alpha 0.01 / 3)
    parts = {f"k={k}": evidence.unit_normal(z * math.sqrt(25) if k == 10 else 0.0, 25) for k in (0, 10, 50)}
    assert not evidence.decide([evidence.any_of(parts, 3)], 0.01).rejected
    assert evidence.decide([evidence.any_of(parts, 1)], 0.01).rejected
    parts["k=50"] = evidence.unit_normal(4.0 * 5, 25)
    d = evidence.decide([evidence.any_of(parts, 3)], 0.01)
    assert d.rejected and d.statistic == pytest.approx(4.0)  # the failing part's numbers
    assert d.summary.startswith("k=0: ") and "; k=10: " in d.summary and "; k=50: " in d.summary


@pytest.mark.parametrize("rejected", [False, True])
def test_any_shows_the_part_with_the_strongest_evidence_as_one_seed_does(rejected: bool) -> None:
    """The first part (k=0) is the weakest: pooled or not, the result shows the strongest, failing or passing."""
    strongest = 4.0 if rejected else 2.0
    parts = {"k=0": evidence.unit_normal(0.5 * 5, 25), "k=10": evidence.unit_normal(strongest * 5, 25)}
    parts["k=50"] = evidence.unit_normal(1.0 * 5, 25)
    d = evidence.decide([evidence.any_of(parts, 3)] * 2, 0.01)
    assert d.rejected is rejected and d.part == "k=10"
    assert d.score == pytest.approx(strongest / 5) and d.statistic == pytest.approx(strongest * math.sqrt(2))
    counts = {  # Newcombe-Wilson gives no p-value: the largest lower bound of the excess
        f"k={k}": evidence.excess(Proportion(hits, 100), Proportion(10, 100), 0.0, "a")
        for k, hits in ((0, 12), (10, 30), (50, 20))
    }
    assert evidence.decide([evidence.any_of(counts, 3)], 0.01).part == "k=10"
    unusable = {**parts, "k=50": evidence.unit_normal(math.nan, 25)}  # no usable scores: fails for sure
    assert evidence.decide([evidence.any_of(unusable, 3)], 0.01).part == "k=50"


def test_exact_fails_with_any_failing_seed_and_reports_the_largest_spend() -> None:
    d = evidence.decide([evidence.exact(False, 10.0), evidence.exact(False, 30.0)], 0.01)
    assert not d.rejected and d.score == 30.0 and d.summary == "every one of 2 seeds passed"


def test_every_kind_survives_a_strict_json_report() -> None:
    kinds = [
        evidence.unit_normal(3.0, 40),
        evidence.excess(Proportion(9, 40), Proportion(2, 40), 0.05, "a"),
        evidence.prediction(2.0, 4, [1.0, 1.2, 0.9]),
        evidence.population(0.5, 100, [0.4, 0.45, 0.5], 0.05),
        evidence.shortfall(0.1, 0.05, 0.2, 0.4),
        evidence.exact(True, 5.0),
        evidence.any_of({"k=0": evidence.unit_normal(1.0, 10)}, 1),
    ]
    for ev in kinds:
        assert evidence.decide([through_json(ev)], 0.01) == evidence.decide([ev], 0.01)
