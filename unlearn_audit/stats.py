"""Estimates with uncertainties, and the declared tests that turn them into verdicts.

Every verdict in the suite comes from one of these functions, so that the rule printed next
to a score is the rule that was applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as _st


@dataclass(frozen=True)
class Proportion:
    """k successes out of n, with the Wilson score interval at the given confidence."""

    successes: int
    trials: int
    confidence: float = 0.95

    @property
    def value(self) -> float:
        return self.successes / self.trials if self.trials else float("nan")

    @property
    def stderr(self) -> float:
        p = self.value
        return math.sqrt(p * (1 - p) / self.trials) if self.trials else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.trials, self.confidence)


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson score interval for a binomial proportion."""
    if trials == 0:
        return (0.0, 1.0)
    z = _st.norm.ppf(0.5 + confidence / 2)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    lower = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the boundaries, not rounded
    upper = 1.0 if successes == trials else min(1.0, centre + half)
    return (lower, upper)


def newcombe_difference_interval(a: Proportion, b: Proportion, confidence: float) -> tuple[float, float]:
    """Interval for p_a - p_b by Newcombe's hybrid score method (method 10), from Wilson intervals."""
    la, ua = wilson_interval(a.successes, a.trials, confidence)
    lb, ub = wilson_interval(b.successes, b.trials, confidence)
    pa, pb = a.value, b.value
    d = pa - pb
    lower = d - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
    upper = d + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
    return (lower, upper)


@dataclass(frozen=True)
class ExcessTest:
    """One-sided test that proportion `a` exceeds proportion `b` by more than `margin`.

    H0: p_a - p_b <= margin. Rejected (the check fails) when the lower end of the one-sided
    (1 - alpha) Newcombe interval for p_a - p_b lies above the margin.
    """

    difference: float
    lower_bound: float
    margin: float
    alpha: float

    @property
    def rejected(self) -> bool:
        return self.lower_bound > self.margin


def excess_test(a: Proportion, b: Proportion, margin: float, alpha: float) -> ExcessTest:
    # A two-sided interval at confidence 1 - 2 alpha has a one-sided lower bound at level 1 - alpha.
    lower, _ = newcombe_difference_interval(a, b, confidence=1 - 2 * alpha)
    return ExcessTest(a.value - b.value, lower, margin, alpha)


@dataclass(frozen=True)
class ZTest:
    """z-test of H0: mean = 0 for unit-variance samples (one-sided H1: mean > 0, or two-sided)."""

    mean: float
    stderr: float
    n: int
    z: float
    p_value: float
    alpha: float

    @property
    def rejected(self) -> bool:
        return self.p_value < self.alpha


def unit_normal_mean_test(values: list[float], alpha: float, alternative: str = "greater") -> ZTest:
    """Exact when the values are i.i.d. N(0, 1) under H0 (the GUS null): z = mean * sqrt(n).

    `alternative` is "greater" (H1: mean > 0) or "two-sided" (H1: mean != 0).
    """
    if alternative not in ("greater", "two-sided"):
        raise ValueError(f"alternative must be 'greater' or 'two-sided', got {alternative!r}")
    n = len(values)
    if n == 0:
        return ZTest(float("nan"), float("nan"), 0, float("nan"), 1.0, alpha)
    mean = sum(values) / n
    se = 1 / math.sqrt(n)
    z = mean / se
    p = float(_st.norm.sf(z)) if alternative == "greater" else float(2 * _st.norm.sf(abs(z)))
    return ZTest(mean, se, n, z, p, alpha)


@dataclass(frozen=True)
class PredictionTest:
    """Is `value` larger than a new draw from the population that `references` sample?

    t = (value - mean) / (sd * sqrt(1 + 1/n)) has Student's t distribution with n - 1 degrees
    of freedom when value and references are i.i.d. normal: the classical prediction interval,
    which carries both the spread of the population and the uncertainty of its estimated mean.
    """

    value: float
    reference_mean: float
    prediction_sd: float  # sd * sqrt(1 + 1/n)
    n: int
    t: float
    p_value: float
    alpha: float

    @property
    def rejected(self) -> bool:
        return self.p_value < self.alpha


def prediction_test(value: float, references: list[float], alpha: float) -> PredictionTest:
    """One-sided (H1: value is above the reference population) prediction test; needs >= 2 references."""
    n = len(references)
    if n < 2:
        raise ValueError(f"a prediction test needs at least 2 references, got {n}")
    mean = sum(references) / n
    sd = math.sqrt(sum((r - mean) ** 2 for r in references) / (n - 1))
    scale = sd * math.sqrt(1 + 1 / n)
    if scale > 0:
        t = (value - mean) / scale
        p = float(_st.t.sf(t, df=n - 1))
    else:  # identical references: any excess is infinitely significant, none is not
        t = math.inf if value > mean else (-math.inf if value < mean else 0.0)
        p = 0.0 if value > mean else 1.0
    return PredictionTest(value, mean, scale, n, t, p, alpha)


def population_excess_test(
    value: float, references: list[float], margin: float, alpha: float, trials: float
) -> PredictionTest:
    """One-sided prediction test of a proportion against a population of reference models' proportions:
    H1: `value` exceeds a new draw from the population by more than `margin`.

    Like `prediction_test` on `value - margin`, with the population's spread floored at the binomial
    sampling sd of one measurement of `trials` inputs at the population's rate (shrunk towards 1/2 by
    two successes and two failures): when every reference reads 0 (no clean model relearns a backdoor
    that it never saw) the spread between models is not measurable, but the method's measurement
    still carries sampling noise.
    """
    n = len(references)
    if n < 2:
        raise ValueError(f"a population test needs at least 2 references, got {n}")
    mean = sum(references) / n
    sd = math.sqrt(sum((r - mean) ** 2 for r in references) / (n - 1))
    rate = (mean * trials + 2) / (trials + 4)
    sd = max(sd, math.sqrt(rate * (1 - rate) / trials)) if trials > 0 else sd
    scale = sd * math.sqrt(1 + 1 / n)
    t = (value - margin - mean) / scale if scale > 0 else (math.inf if value - margin > mean else -math.inf)
    return PredictionTest(value, mean, scale, n, t, float(_st.t.sf(t, df=n - 1)), alpha)


def z_power(effect: float, alpha: float, two_sided: bool = False, critical: float | None = None) -> float:
    """Power of a test whose statistic is N(effect, 1) under the alternative, at level alpha.

    `critical` overrides the normal critical value (e.g. a t quantile for a prediction test).
    """
    if math.isnan(effect):
        return float("nan")
    c = critical if critical is not None else float(_st.norm.isf(alpha / 2 if two_sided else alpha))
    power = float(_st.norm.sf(c - effect))
    if two_sided:
        power += float(_st.norm.cdf(-c - effect))
    return min(1.0, power)


def seeds_for_power(
    effect_one_seed: float,
    alpha: float,
    two_sided: bool = False,
    target: float = 0.8,
    limit: int = 100,
    critical: float | None = None,
) -> int | None:
    """How many seeds a pooled test needs to reach `target` power, if the effect adds up over seeds as
    Stouffer's z does (the pooled statistic grows as sqrt(seeds)); None if more than `limit`.
    `critical` as in `z_power`, kept for every number of seeds (conservative for a t quantile)."""
    if math.isnan(effect_one_seed):
        return None
    for seeds in range(1, limit + 1):
        if z_power(effect_one_seed * math.sqrt(seeds), alpha, two_sided, critical) >= target:
            return seeds
    return None


def excess_effect(a: Proportion, b: Proportion, margin: float) -> float:
    """Standardised excess of proportion a over b beyond the margin (normal approximation): the z
    that `excess_test` would see on average when the true rates are a's and b's."""
    d = a.value - b.value - margin
    var = a.value * (1 - a.value) / max(1, a.trials) + b.value * (1 - b.value) / max(1, b.trials)
    if var <= 0:
        return math.inf if d > 0 else -math.inf
    return d / math.sqrt(var)
