"""The minimal detectable effect (MDE) of each check's test, from the evidence the test rests on.

The power against the poisoned original says whether the test could fail the poison not removed at
all, the largest effect there can be. A method author needs the other end: how large a *residual* the
test sees. The MDE is the smallest excess over the reference, in the score's own unit, that the test
detects with probability `POWER_TARGET` (0.8) at the run's n, alpha, seeds and reference population.
It is computed from the same evidence (`checks.evidence`) and level the verdict used, so a pooled test
states the MDE of the pooled test.

Per evidence kind, with the reference held at its measured value:

- ``unit_normal`` (GUS): the mean score d with power 0.8 in the z-test of n scores (two-sided: both
  tails counted).
- ``excess`` (two counts, Newcombe-Wilson with a margin): exact binomial power of the test as applied
  to the method's count, at the reference's measured count; the MDE is the smallest rate gap (the
  margin included) at which the method's count fails the test with probability 0.8.
- ``population`` and ``prediction`` (a value against a population of clean models): the method's value
  fails when it lies above the population's mean (+ margin) by the prediction interval's critical value;
  a method whose models vary as the clean models do reaches that with probability 0.8 when its mean
  lies z_0.8 of their spread further out.
- ``shortfall`` (a one-sided z-test of a difference): (z_alpha + z_0.8) standard errors beyond the
  threshold, expressed as a distance from the reference.
- ``any`` (parts at alpha / divisor): each part's MDE; the check's is the largest finite one, the size
  of excess it detects wherever it occurs.
- ``exact`` (deterministic): no MDE (None).

An MDE is ``inf`` when no excess the score's range allows reaches the target (e.g. a proportion whose
reference is so close to 1 that the margin leaves no room).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from scipy import stats as st

from unlearn_audit.checks.base import NONE_DETECTED, POWER_TARGET, CheckResult
from unlearn_audit.checks.evidence import Evidence
from unlearn_audit.stats import Proportion, excess_test

Z_TARGET = float(st.norm.ppf(POWER_TARGET))


@dataclass(frozen=True)
class Mde:
    """A test's minimal detectable effect: `value` in the score's unit, beyond the reference `reference`."""

    value: float
    reference: float | None
    parts: dict[str, float] | None = None  # for a test over several parts (e.g. attacker sizes k)


def minimal_detectable_effect(evidence: list[Evidence], alpha: float) -> Mde | None:
    """The MDE of the test `checks.evidence.decide` runs on `evidence` (one seed's, or several pooled) at `alpha`."""
    kinds = {e.get("kind") for e in evidence}
    if len(kinds) != 1:
        return None
    kind = kinds.pop()
    finder = _FINDERS.get(str(kind))
    return finder(evidence, alpha) if finder is not None else None


def with_mde(result: CheckResult, evidence: list[Evidence], alpha: float) -> CheckResult:
    """`result` with its MDE in the details (`mde`, `mde_reference`, `mde_parts`) where its test has one.

    JSON has no infinity: an MDE that no excess within the score's range reaches is stored as `mde` None
    with `mde_note` saying so (the parts' the same way, None).
    """
    found = minimal_detectable_effect(evidence, alpha) if evidence else None
    if found is None:
        return result
    details: dict[str, Any] = {**result.details, "mde": found.value, "mde_reference": found.reference}
    if math.isinf(found.value):
        details["mde"] = None
        details["mde_note"] = NONE_DETECTED
    if found.parts is not None:
        details["mde_parts"] = found.parts
    return dataclasses.replace(result, details=details)


def observed_excess(evidence: Evidence) -> dict[str, float]:
    """The method's observed excess over the reference in one seed's evidence, in the unit of its MDE (by part
    for a test over several parts, else under the key ""): what a calibration compares with the MDE."""
    kind = evidence.get("kind")
    if kind == "any":
        return {name: next(iter(observed_excess(part).values())) for name, part in evidence["parts"].items()}
    if kind == "unit_normal":
        mean = evidence["sum"] / evidence["n"] if evidence["n"] and evidence["sum"] is not None else math.nan
        return {"": abs(mean) if evidence["alternative"] == "two-sided" else mean}
    if kind == "excess":  # a is the rate that is bad when high (the method's attack success, retrain's accuracy)
        (ah, at), (bh, bt) = evidence["a"], evidence["b"]
        return {"": ah / at - bh / bt if at and bt else math.nan}
    if kind == "population":
        refs = evidence["references"]
        return {"": evidence["value"] - sum(refs) / len(refs) if refs else math.nan}
    if kind == "prediction":
        k, sums = evidence["k"], evidence["reference_sums"]
        return {"": (evidence["sum"] - sum(sums) / len(sums)) / k if k and sums else math.nan}
    if kind == "shortfall":
        return {"": evidence["reference"] - evidence["score"]}
    return {}


def _unit_normal(evidence: list[Evidence], alpha: float) -> Mde:
    n = sum(int(e["n"]) for e in evidence)
    if n == 0:
        return Mde(math.inf, 0.0)
    two_sided = evidence[0]["alternative"] == "two-sided"
    c = float(st.norm.isf(alpha / 2 if two_sided else alpha))

    def power(d: float) -> float:
        z = d * math.sqrt(n)
        p = float(st.norm.sf(c - z))
        return p + float(st.norm.cdf(-c - z)) if two_sided else p

    return Mde(_smallest(power, 0.0, 1.0 + (c + Z_TARGET) / math.sqrt(n)), 0.0)


def _excess(evidence: list[Evidence], alpha: float) -> Mde:
    a = Proportion(sum(e["a"][0] for e in evidence), sum(e["a"][1] for e in evidence))
    b = Proportion(sum(e["b"][0] for e in evidence), sum(e["b"][1] for e in evidence))
    margin = float(evidence[0]["margin"])
    if a.trials == 0 or b.trials == 0:
        return Mde(math.inf, None)
    if evidence[0]["method"] == "a":  # the method's rate a is bad when high (attack success)
        failing = _first(lambda x: excess_test(Proportion(x, a.trials), b, margin, alpha).rejected, 0, a.trials)
        if failing is None:
            return Mde(math.inf, b.value)
        # P(count >= failing) at rate p grows with p: the smallest p with power >= target.
        p = _smallest(lambda p: float(st.binom.sf(failing - 1, a.trials, p)), b.value, 1.0)
        return Mde(p - b.value, b.value)
    # The method's rate b is bad when low (accuracy): the test fails it when a - b exceeds the margin.
    passing = _first(lambda y: not excess_test(a, Proportion(y, b.trials), margin, alpha).rejected, 0, b.trials)
    if passing is None or passing == 0:
        return Mde(math.inf, a.value)
    worst_failing = passing - 1  # counts up to this one fail
    # P(count <= worst_failing) at rate q falls with q: the largest q with power >= target.
    q = _largest(lambda q: float(st.binom.cdf(worst_failing, b.trials, q)), 0.0, a.value)
    return Mde(a.value - q if math.isfinite(q) else math.inf, a.value)


def _population(evidence: list[Evidence], alpha: float) -> Mde:
    from unlearn_audit.stats import population_excess_test

    seeds = len(evidence)
    refs = min(len(e["references"]) for e in evidence)
    references = [sum(e["references"][j] for e in evidence) / seeds for j in range(refs)]
    trials = sum(int(e["n"]) for e in evidence)
    margin = float(evidence[0]["margin"])
    # The test's scale and mean do not depend on the method's value: read them off a test at the mean.
    probe = population_excess_test(0.0, references, margin, alpha, trials)
    spread = probe.prediction_sd / math.sqrt(1 + 1 / probe.n)
    critical = float(st.t.isf(alpha, probe.n - 1))
    mde = margin + critical * probe.prediction_sd + Z_TARGET * spread
    return Mde(mde if probe.reference_mean + mde <= 1.0 else math.inf, probe.reference_mean)


def _prediction(evidence: list[Evidence], alpha: float) -> Mde:
    k = sum(int(e["k"]) for e in evidence)
    refs = min(len(e["reference_sums"]) for e in evidence)
    if k == 0 or refs < 2:
        return Mde(math.inf, None)
    references = [sum(e["reference_sums"][j] for e in evidence) / k for j in range(refs)]
    mean = sum(references) / refs
    spread = math.sqrt(sum((r - mean) ** 2 for r in references) / (refs - 1))
    critical = float(st.t.isf(alpha, refs - 1))
    mde = critical * spread * math.sqrt(1 + 1 / refs) + Z_TARGET * spread
    return Mde(mde if mean + mde <= 1.0 else math.inf, mean)


def _shortfall(evidence: list[Evidence], alpha: float) -> Mde:
    seeds = len(evidence)
    se = math.sqrt(sum(float(e["se"]) ** 2 for e in evidence))
    threshold = sum(float(e["score"]) + float(e["d"]) for e in evidence) / seeds
    reference = sum(float(e["reference"]) for e in evidence) / seeds
    beyond = (float(st.norm.isf(alpha)) + Z_TARGET) * se / seeds
    # A barrier cannot go below 0. When the threshold is within `beyond` of 0, a model with no barrier at
    # all is still detected (its path is flat, its standard error 0, as the poisoned original's): the MDE
    # is then the whole reference barrier; with no threshold above 0 nothing is detected.
    if threshold <= 0:
        return Mde(math.inf, reference)
    return Mde(min(reference - threshold + beyond, reference), reference)


def _any(evidence: list[Evidence], alpha: float) -> Mde | None:
    divisor = int(evidence[0]["divisor"])
    parts: dict[str, float] = {}
    reference: float | None = None
    for name in evidence[0]["parts"]:
        found = minimal_detectable_effect([e["parts"][name] for e in evidence], alpha / divisor)
        if found is not None:
            parts[name] = found.value
            reference = found.reference if reference is None else reference
    if not parts:
        return None
    finite = [v for v in parts.values() if math.isfinite(v)]
    return Mde(max(finite) if finite else math.inf, None, parts)


def _smallest(power: Any, low: float, high: float) -> float:
    """The smallest x in [low, high] with power(x) >= target (power increasing in x); inf if none."""
    if power(high) < POWER_TARGET:
        return math.inf
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (low, mid) if power(mid) >= POWER_TARGET else (mid, high)
    return high


def _largest(power: Any, low: float, high: float) -> float:
    """The largest x in [low, high] with power(x) >= target (power decreasing in x); -inf if none."""
    if power(low) < POWER_TARGET:
        return -math.inf
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if power(mid) >= POWER_TARGET else (low, mid)
    return low


def _first(condition: Any, low: int, high: int) -> int | None:
    """The smallest integer in [low, high] where a monotone `condition` holds (False then True); None if none."""
    if not condition(high):
        return None
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if condition(mid) else (mid + 1, high)
    return low


_FINDERS = {
    "unit_normal": _unit_normal,
    "excess": _excess,
    "population": _population,
    "prediction": _prediction,
    "shortfall": _shortfall,
    "any": _any,
}
