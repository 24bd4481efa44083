"""Unit tests for `unlearn_audit.stats`: the intervals and tests that every verdict comes from."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
from scipy import stats as st

from unlearn_audit.stats import (
    ExcessTest,
    Proportion,
    excess_test,
    newcombe_difference_interval,
    unit_normal_mean_test,
    wilson_interval,
)

# --------------------------------------------------------------------------- Wilson interval


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [
        # Textbook values of the (uncorrected) Wilson score interval at 95%.
        (0, 10, (0.0, 0.27753)),
        (5, 10, (0.23659, 0.76341)),
        (10, 10, (0.72247, 1.0)),
    ],
)
def test_wilson_reference_values(k: int, n: int, expected: tuple[float, float]) -> None:
    lo, hi = wilson_interval(k, n, 0.95)
    assert lo == pytest.approx(expected[0], abs=1e-4)
    assert hi == pytest.approx(expected[1], abs=1e-4)


@pytest.mark.parametrize(
    "k,n", [(0, 10), (1, 10), (5, 10), (9, 10), (10, 10), (3, 7), (0, 1), (1, 1), (17, 250), (480, 500)]
)
@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
def test_wilson_matches_scipy(k: int, n: int, confidence: float) -> None:
    ci = st.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    lo, hi = wilson_interval(k, n, confidence)
    assert lo == pytest.approx(ci.low, abs=1e-9)
    assert hi == pytest.approx(ci.high, abs=1e-9)


@settings(max_examples=200, deadline=None, database=None)
@given(n=hst.integers(1, 5000), data=hst.data(), confidence=hst.floats(0.5, 0.999))
def test_wilson_matches_scipy_property(n: int, data: hst.DataObject, confidence: float) -> None:
    k = data.draw(hst.integers(0, n))
    ci = st.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    lo, hi = wilson_interval(k, n, confidence)
    assert lo == pytest.approx(ci.low, abs=1e-9)
    assert hi == pytest.approx(ci.high, abs=1e-9)


def test_wilson_no_trials_is_uninformative() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


@settings(max_examples=300, deadline=None, database=None)
@given(n=hst.integers(1, 100_000), data=hst.data(), confidence=hst.floats(0.5, 0.9999))
def test_wilson_interval_bounds_and_contains_estimate(n: int, data: hst.DataObject, confidence: float) -> None:
    k = data.draw(hst.integers(0, n))
    lo, hi = wilson_interval(k, n, confidence)
    assert 0.0 <= lo <= hi <= 1.0
    p = k / n
    # (Exact containment at k = 0 and k = n is tested separately, see below.)
    assert lo <= p + 1e-12 and p - 1e-12 <= hi
    if 0 < k < n:
        assert lo < p < hi
    # The interval is non-degenerate: there is always some uncertainty left.
    assert hi - lo > 0


def test_wilson_interval_exact_at_boundaries() -> None:
    for n in range(1, 200):
        for confidence in (0.5, 0.9, 0.95, 0.99):
            assert wilson_interval(0, n, confidence)[0] == 0.0, (n, confidence)
            assert wilson_interval(n, n, confidence)[1] == 1.0, (n, confidence)


@settings(max_examples=200, deadline=None, database=None)
@given(n=hst.integers(1, 2000), data=hst.data(), factor=hst.integers(2, 50))
def test_wilson_interval_narrows_with_n(n: int, data: hst.DataObject, factor: int) -> None:
    """Same observed proportion, more trials: a strictly narrower interval."""
    k = data.draw(hst.integers(0, n))
    lo1, hi1 = wilson_interval(k, n)
    lo2, hi2 = wilson_interval(k * factor, n * factor)
    assert hi2 - lo2 < hi1 - lo1


@settings(max_examples=100, deadline=None, database=None)
@given(n=hst.integers(1, 2000), data=hst.data())
def test_wilson_interval_widens_with_confidence(n: int, data: hst.DataObject) -> None:
    k = data.draw(hst.integers(0, n))
    lo90, hi90 = wilson_interval(k, n, 0.90)
    lo99, hi99 = wilson_interval(k, n, 0.99)
    assert lo99 <= lo90 + 1e-12 and hi90 <= hi99 + 1e-12
    assert hi99 - lo99 > hi90 - lo90


def test_proportion_properties() -> None:
    p = Proportion(3, 12)
    assert p.value == 0.25
    assert p.stderr == pytest.approx(math.sqrt(0.25 * 0.75 / 12))
    assert p.interval == wilson_interval(3, 12, 0.95)
    assert Proportion(3, 12, confidence=0.8).interval == wilson_interval(3, 12, 0.8)
    empty = Proportion(0, 0)
    assert math.isnan(empty.value) and math.isnan(empty.stderr)
    assert empty.interval == (0.0, 1.0)


# --------------------------------------------------------------------------- Newcombe difference


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # Newcombe (1998), Statistics in Medicine 17:873, Table II, method 10.
        ((56, 70), (48, 80), (0.0524, 0.3339)),
        ((9, 10), (3, 10), (0.1705, 0.8090)),
    ],
)
def test_newcombe_reference_values(a, b, expected) -> None:
    lo, hi = newcombe_difference_interval(Proportion(*a), Proportion(*b), 0.95)
    assert lo == pytest.approx(expected[0], abs=1e-3)
    assert hi == pytest.approx(expected[1], abs=1e-3)


@settings(max_examples=300, deadline=None, database=None)
@given(
    na=hst.integers(1, 3000),
    nb=hst.integers(1, 3000),
    data=hst.data(),
    confidence=hst.floats(0.5, 0.999),
)
def test_newcombe_contains_observed_difference(na: int, nb: int, data: hst.DataObject, confidence: float) -> None:
    ka = data.draw(hst.integers(0, na))
    kb = data.draw(hst.integers(0, nb))
    a, b = Proportion(ka, na), Proportion(kb, nb)
    lo, hi = newcombe_difference_interval(a, b, confidence)
    d = ka / na - kb / nb
    assert lo <= d + 1e-12
    assert d - 1e-12 <= hi
    assert -1.0 - 1e-12 <= lo <= hi <= 1.0 + 1e-12


def test_newcombe_is_antisymmetric() -> None:
    a, b = Proportion(30, 80), Proportion(12, 60)
    lo, hi = newcombe_difference_interval(a, b, 0.95)
    lo_r, hi_r = newcombe_difference_interval(b, a, 0.95)
    assert lo == pytest.approx(-hi_r)
    assert hi == pytest.approx(-lo_r)


# --------------------------------------------------------------------------- excess test


def test_excess_test_rejects_a_large_excess() -> None:
    t = excess_test(Proportion(95, 100), Proportion(0, 100), margin=0.05, alpha=0.05)
    assert isinstance(t, ExcessTest)
    assert t.difference == pytest.approx(0.95)
    assert t.lower_bound > 0.05
    assert t.rejected


@pytest.mark.parametrize("k,n", [(0, 100), (50, 100), (100, 100), (7, 30)])
def test_excess_test_does_not_reject_equal_proportions(k: int, n: int) -> None:
    t = excess_test(Proportion(k, n), Proportion(k, n), margin=0.05, alpha=0.05)
    assert t.difference == 0.0
    assert t.lower_bound < 0.0
    assert not t.rejected


def test_excess_test_does_not_reject_when_a_is_lower() -> None:
    t = excess_test(Proportion(10, 100), Proportion(90, 100), margin=0.0, alpha=0.05)
    assert t.difference == pytest.approx(-0.8)
    assert not t.rejected


def test_excess_test_needs_evidence_beyond_the_margin() -> None:
    # Observed excess 0.2 on 10 trials each: far too uncertain to exceed a 0.05 margin.
    assert not excess_test(Proportion(5, 10), Proportion(3, 10), margin=0.05, alpha=0.05).rejected
    # The same observed excess on 5000 trials each: clearly beyond it.
    assert excess_test(Proportion(2500, 5000), Proportion(1500, 5000), margin=0.05, alpha=0.05).rejected


def test_excess_test_uses_one_sided_bound() -> None:
    """The lower bound is the lower end of the two-sided (1 - 2 alpha) Newcombe interval."""
    a, b = Proportion(40, 100), Proportion(25, 100)
    t = excess_test(a, b, margin=0.0, alpha=0.05)
    lo, _ = newcombe_difference_interval(a, b, 0.90)
    assert t.lower_bound == pytest.approx(lo)
    # A smaller alpha is more conservative: a lower lower bound.
    assert excess_test(a, b, margin=0.0, alpha=0.01).lower_bound < t.lower_bound


def test_excess_test_rejected_is_strictly_above_margin() -> None:
    assert not ExcessTest(difference=0.2, lower_bound=0.05, margin=0.05, alpha=0.05).rejected
    assert ExcessTest(difference=0.2, lower_bound=0.0500001, margin=0.05, alpha=0.05).rejected


# --------------------------------------------------------------------------- z-test on the GUS


@pytest.mark.parametrize(
    "values",
    [[0.5, 1.5, -0.2, 2.0], [0.0] * 9, [-1.0, -2.0, -0.5], [3.0], list(np.linspace(-1, 2, 50))],
)
def test_unit_normal_mean_test_statistic(values: list[float]) -> None:
    t = unit_normal_mean_test(values, alpha=0.05)
    n = len(values)
    mean = sum(values) / n
    assert t.n == n
    assert t.mean == pytest.approx(mean)
    assert t.stderr == pytest.approx(1 / math.sqrt(n))
    assert t.z == pytest.approx(mean * math.sqrt(n))
    assert t.p_value == pytest.approx(float(st.norm.sf(mean * math.sqrt(n))), rel=1e-12, abs=1e-300)
    assert t.alpha == 0.05
    assert t.rejected == (t.p_value < 0.05)


def test_unit_normal_mean_test_is_one_sided() -> None:
    up = unit_normal_mean_test([0.5] * 100, alpha=0.01)  # z = 5
    down = unit_normal_mean_test([-0.5] * 100, alpha=0.01)  # z = -5
    assert up.z == pytest.approx(5.0) and up.rejected
    assert down.z == pytest.approx(-5.0) and not down.rejected
    assert down.p_value == pytest.approx(1 - up.p_value)


def test_unit_normal_mean_test_threshold() -> None:
    # z just above / below the one-sided 5% critical value 1.6449.
    assert unit_normal_mean_test([1.65 / 10] * 100, alpha=0.05).rejected
    assert not unit_normal_mean_test([1.64 / 10] * 100, alpha=0.05).rejected


def test_unit_normal_mean_test_empty() -> None:
    t = unit_normal_mean_test([], alpha=0.05)
    assert t.n == 0
    assert t.p_value == 1.0
    assert not t.rejected
    assert math.isnan(t.mean) and math.isnan(t.z)


def test_unit_normal_mean_test_calibrated_under_null() -> None:
    """Under H0 (i.i.d. N(0, 1)) the rejection rate at alpha = 0.05 is 0.05 up to binomial noise.

    2000 repetitions: the standard error of the rate is 0.0049, so [0.03, 0.07] is about +-4 se.
    """
    rng = np.random.default_rng(20240607)
    samples = rng.standard_normal((2000, 150))
    rejections = sum(unit_normal_mean_test(row.tolist(), alpha=0.05).rejected for row in samples)
    rate = rejections / len(samples)
    assert 0.03 <= rate <= 0.07, rate
    # The p-values themselves are uniform under H0.
    p_values = [unit_normal_mean_test(row.tolist(), alpha=0.05).p_value for row in samples[:500]]
    assert st.kstest(p_values, "uniform").pvalue > 1e-3


def test_unit_normal_mean_test_has_power() -> None:
    """A mean shift of 0.3 with n = 150 (z about 3.7) is detected almost always."""
    rng = np.random.default_rng(7)
    samples = rng.standard_normal((500, 150)) + 0.3
    rate = sum(unit_normal_mean_test(row.tolist(), alpha=0.05).rejected for row in samples) / len(samples)
    assert rate > 0.9, rate


def test_two_sided_unit_normal_mean_test() -> None:
    from scipy import stats as st

    from unlearn_audit.stats import unit_normal_mean_test

    values = [-0.4] * 100  # z = -4: leakage in the "wrong" direction
    one = unit_normal_mean_test(values, 0.01)
    two = unit_normal_mean_test(values, 0.01, alternative="two-sided")
    assert not one.rejected and two.rejected
    assert two.p_value == pytest.approx(2 * st.norm.sf(4.0))
    assert unit_normal_mean_test([0.4] * 100, 0.01, alternative="two-sided").p_value == pytest.approx(two.p_value)
    with pytest.raises(ValueError):
        unit_normal_mean_test(values, 0.01, alternative="less")


def test_prediction_test_size_under_the_null() -> None:
    """A new draw from the references' own normal population is rejected at rate alpha."""
    from unlearn_audit.stats import prediction_test

    rng = np.random.default_rng(11)
    draws = rng.normal(3.0, 2.0, size=(4000, 9))
    rate = sum(prediction_test(float(row[0]), row[1:].tolist(), alpha=0.05).rejected for row in draws) / len(draws)
    assert 0.04 <= rate <= 0.06, rate


def test_prediction_test_values_and_power() -> None:
    from unlearn_audit.stats import prediction_test

    refs = [0.0, 1.0, 2.0, 3.0]  # mean 1.5, sd 1.29
    t = prediction_test(6.0, refs, alpha=0.01)
    scale = st.tstd(refs) * math.sqrt(1 + 1 / 4)
    assert t.t == pytest.approx(4.5 / scale)
    assert t.p_value == pytest.approx(st.t.sf(4.5 / scale, df=3))
    assert prediction_test(20.0, refs, alpha=0.01).rejected
    assert not prediction_test(-20.0, refs, alpha=0.01).rejected  # one-sided: below the clean models is fine
    assert prediction_test(1.0, [1.0, 1.0], alpha=0.01).p_value == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        prediction_test(1.0, [1.0], alpha=0.01)


def test_population_excess_test_size_under_the_null() -> None:
    """A method drawn from the clean models' own population (proportions measured on n inputs) is rejected
    at most at rate alpha, with and without the margin."""
    from unlearn_audit.stats import population_excess_test

    rng = np.random.default_rng(5)
    n = 300
    rates = np.clip(rng.normal(0.55, 0.06, size=(4000, 9)), 0, 1)
    measured = rng.binomial(n, rates) / n
    for margin, limit in ((0.0, 0.065), (0.05, 0.01)):
        rate = sum(
            population_excess_test(float(row[0]), row[1:].tolist(), margin, 0.05, n).rejected for row in measured
        ) / len(measured)
        assert rate <= limit, (margin, rate)


def test_population_excess_test_values_floor_and_power() -> None:
    from unlearn_audit.stats import population_excess_test

    refs = [0.5, 0.55, 0.6, 0.45, 0.5]
    test = population_excess_test(0.9, refs, 0.05, 0.01, 300)
    scale = st.tstd(refs) * math.sqrt(1 + 1 / 5)
    assert test.t == pytest.approx((0.9 - 0.05 - 0.52) / scale)
    assert test.p_value == pytest.approx(st.t.sf(test.t, df=4)) and test.rejected
    assert not population_excess_test(0.6, refs, 0.05, 0.01, 300).rejected
    # Every clean model reads 0: the spread is floored at one measurement's sampling noise, not zero.
    zeros = [0.0] * 9
    floored = population_excess_test(0.06, zeros, 0.05, 0.01, 300)
    assert math.isfinite(floored.t) and floored.prediction_sd > 0 and not floored.rejected
    assert population_excess_test(0.2, zeros, 0.05, 0.01, 300).rejected
    with pytest.raises(ValueError, match="at least 2"):
        population_excess_test(0.1, [0.1], 0.0, 0.01, 300)
