"""The power statement of the checks: formulas against known values, and the low-power message."""

from __future__ import annotations

import math

import pytest
from scipy import stats as st

from unlearn_audit.checks.base import CheckResult
from unlearn_audit.checks.power import with_power
from unlearn_audit.stats import Proportion, excess_effect, seeds_for_power, z_power


def test_z_power_matches_the_textbook_values() -> None:
    # one-sided at alpha 0.05, effect 2.486 (= 1.645 + 0.841): power 0.8
    assert z_power(1.6449 + 0.8416, 0.05) == pytest.approx(0.8, abs=1e-3)
    assert z_power(0.0, 0.01) == pytest.approx(0.01)
    assert z_power(0.0, 0.01, two_sided=True) == pytest.approx(0.01)
    assert z_power(math.inf, 0.01) == 1.0 and z_power(-math.inf, 0.01) == 0.0
    # a t critical value lowers the power
    assert z_power(3.0, 0.01, critical=float(st.t.isf(0.01, 7))) < z_power(3.0, 0.01)


def test_seeds_for_power_grow_as_the_effect_shrinks() -> None:
    assert seeds_for_power(5.0, 0.01) == 1
    # effect 1 per seed: pooled z = sqrt(s); needs sqrt(s) >= 2.326 + 0.842, s >= 10.04
    assert seeds_for_power(1.0, 0.01) == 11
    assert seeds_for_power(0.0, 0.01) is None


def test_excess_effect_is_the_standardised_gap() -> None:
    a, b = Proportion(90, 100), Proportion(10, 100)
    assert excess_effect(a, b, 0.05) == pytest.approx(0.75 / math.sqrt(0.09 / 100 + 0.09 / 100))
    assert excess_effect(Proportion(10, 10), Proportion(0, 10), 0.05) == math.inf


def result(verdict: str = "pass") -> CheckResult:
    return CheckResult(
        check="targeted_removed",
        verdict=verdict,
        score=0.5,
        stderr=0.1,
        reference=0.2,
        reference_stderr=0.1,
        direction="lower_is_better",
        rule="r",
    )


def test_low_power_is_said_with_the_seeds_that_would_reach_the_target() -> None:
    low = with_power(result(), 1.5, 0.01)
    assert low.details["power"] < 0.8 and low.details["seeds_for_power_0.8"] == 5
    assert low.message.startswith("low power: 0.") and "about 5 seeds would reach 0.8" in low.message
    high = with_power(result(), 6.0, 0.01)
    assert high.details["power"] > 0.99 and high.message == ""
    none = with_power(result(), -math.inf, 0.01)
    assert "no number of seeds up to 100 reaches 0.8" in none.message
