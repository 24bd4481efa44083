"""The evidence a check's test rests on, in a form that adds up over seeds.

Every statistical check records, next to its verdict, the sufficient statistics of its test
(`details["evidence"]`, plain JSON). `decide` runs the same test on the evidence of one seed or of
several seeds pooled:

- ``unit_normal``: a sum of `n` scores that are exactly N(0, 1) under the null (GUS). Pooling
  adds the sums and the counts: z = sum / sqrt(n), Stouffer's z weighted by each seed's number of
  poisons, still exact.
- ``excess``: two counts (`a` and `b`, each [hits, trials]) and a margin, H0: p_a - p_b <= margin.
  Pooling adds the counts (Newcombe-Wilson interval of the difference, as for one seed).
- ``prediction``: a method's summed soft scores over `k` validated targets and the same sums of
  each clean reference model. Pooling adds target sums and counts over seeds, and reference model j
  of the pool is the j-th clean model of every seed: under the null (the method's models are like
  clean retrained ones) the pooled score and the pooled references are again draws from one
  population, so the prediction t-test stays as exact as for one seed. The evidence says how many
  targets the test needs (`min_k`); a pool with fewer is not judged (xfail).
- ``population``: a method's proportion (attack success after relearning), read on `n` inputs, against
  the same proportion of a population of clean models (retrain and the fixture's extra clean models)
  under the identical measurement, with a margin. Pooling averages over seeds, and population member j
  of the pool is the j-th clean model of every seed, as for ``prediction``.
- ``shortfall``: a one-sided z-test that a difference `d` (with standard error `se`) is > 0.
  Pooling adds the differences and their variances; a seed whose score could not be measured
  (`unmeasured` says why) fails the pool.
- ``any``: several named parts tested at alpha / `divisor` each (Bonferroni), failed if any part
  fails; each part pools on its own.
- ``exact``: a deterministic verdict (the budget): the pool fails if any seed fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from scipy import stats as st

from unlearn_audit.stats import Proportion, excess_test, population_excess_test, prediction_test

Evidence = dict[str, Any]


@dataclass(frozen=True)
class Decision:
    """What one test on (pooled) evidence found: rejected means the check fails."""

    rejected: bool
    score: float | None  # the method's pooled score, in the check's units
    reference: float | None  # None: the evidence has no reference (an exact null); pooling averages the seeds'
    statistic: float | None  # z, t or the lower bound of an excess
    p_value: float | None
    summary: str  # one line: the test and its outcome, for the pooled result's message
    stderr: float | None = None
    reference_stderr: float | None = None
    part: str | None = None  # a test over named parts: the part whose score, reference and statistic these are


def unit_normal(total: float, n: int, alternative: str = "two-sided") -> Evidence:
    return {"kind": "unit_normal", "sum": float(total), "n": int(n), "alternative": alternative}


def excess(a: Proportion, b: Proportion, margin: float, method: str) -> Evidence:
    """`method` says which of a, b is the audited model's count (the other is the reference's)."""
    return {
        "kind": "excess",
        "a": [a.successes, a.trials],
        "b": [b.successes, b.trials],
        "margin": float(margin),
        "method": method,
    }


def prediction(total: float, k: int, reference_sums: list[float], min_k: int = 1) -> Evidence:
    """`min_k`: the targets the test needs, over every seed it pools (`checks.pooling.short_of_evidence`)."""
    return {
        "kind": "prediction",
        "sum": float(total),
        "k": int(k),
        "reference_sums": [float(r) for r in reference_sums],
        "min_k": int(min_k),
    }


def population(value: float, n: int, references: list[float], margin: float) -> Evidence:
    return {
        "kind": "population",
        "value": float(value),
        "n": int(n),
        "references": [float(r) for r in references],
        "margin": float(margin),
    }


def shortfall(d: float, se: float, score: float, reference: float, unmeasured: str = "") -> Evidence:
    """`unmeasured`: why this seed's score shows nothing (empty: it was measured); the pool then fails."""
    return {
        "kind": "shortfall",
        "d": float(d),
        "se": float(se),
        "score": float(score),
        "reference": float(reference),
        "unmeasured": unmeasured,
    }


def any_of(parts: dict[str, Evidence], divisor: int) -> Evidence:
    return {"kind": "any", "parts": parts, "divisor": int(divisor)}


def exact(failed: bool, score: float) -> Evidence:
    return {"kind": "exact", "failed": bool(failed), "score": float(score)}


def decide(evidence: list[Evidence], alpha: float) -> Decision:
    """The check's test on the evidence of every seed in `evidence`, pooled."""
    kinds = {e["kind"] for e in evidence}
    if len(kinds) != 1:
        raise ValueError(f"cannot pool evidence of different kinds: {sorted(kinds)}")
    kind = kinds.pop()
    return _DECIDERS[kind](evidence, alpha)


def _unit_normal(evidence: list[Evidence], alpha: float) -> Decision:
    n = sum(e["n"] for e in evidence)
    # A non-finite sum (no usable score) reads back from JSON as None.
    total = sum(e["sum"] if e["sum"] is not None else math.nan for e in evidence)
    two_sided = evidence[0]["alternative"] == "two-sided"
    if n == 0 or not math.isfinite(total):
        return Decision(True, None, None, None, None, "no usable scores: the poison cannot be shown to be gone")
    z = total / math.sqrt(n)
    p = float(2 * st.norm.sf(abs(z))) if two_sided else float(st.norm.sf(z))
    rejected = p < alpha
    return Decision(
        rejected,
        total / n,
        None,
        z,
        p,
        f"pooled mean {total / n:.3f} over {n} scores, z = {z:.2f}, p = {p:.2g} "
        f"({'two' if two_sided else 'one'}-sided, alpha {alpha:.3g}): {'fail' if rejected else 'pass'}",
        stderr=1 / math.sqrt(n),
    )


def _excess(evidence: list[Evidence], alpha: float) -> Decision:
    a = Proportion(sum(e["a"][0] for e in evidence), sum(e["a"][1] for e in evidence))
    b = Proportion(sum(e["b"][0] for e in evidence), sum(e["b"][1] for e in evidence))
    margin = evidence[0]["margin"]
    test = excess_test(a, b, margin, alpha)
    mine, ref = (a, b) if evidence[0]["method"] == "a" else (b, a)
    return Decision(
        test.rejected,
        mine.value,
        ref.value,
        test.lower_bound,
        None,
        f"pooled counts {a.successes}/{a.trials} vs {b.successes}/{b.trials}: lower bound of the "
        f"excess {test.lower_bound:.3f} {'>' if test.rejected else '<='} margin {margin:g} (alpha {alpha:.3g})",
        stderr=mine.stderr,
        reference_stderr=ref.stderr,
    )


def _prediction(evidence: list[Evidence], alpha: float) -> Decision:
    k = sum(e["k"] for e in evidence)
    refs = min(len(e["reference_sums"]) for e in evidence)
    score = sum(e["sum"] for e in evidence) / k
    references = [sum(e["reference_sums"][j] for e in evidence) / k for j in range(refs)]
    test = prediction_test(score, references, alpha)
    return Decision(
        test.rejected,
        score,
        test.reference_mean,
        test.t,
        test.p_value,
        f"pooled soft attack success {score:.3f} over {k} targets vs {refs} pooled clean models "
        f"{test.reference_mean:.3f}, t = {test.t:.2f}, p = {test.p_value:.2g} (alpha {alpha:.3g})",
        reference_stderr=test.prediction_sd,
    )


def _population(evidence: list[Evidence], alpha: float) -> Decision:
    seeds = len(evidence)
    refs = min(len(e["references"]) for e in evidence)
    value = sum(e["value"] for e in evidence) / seeds
    references = [sum(e["references"][j] for e in evidence) / seeds for j in range(refs)]
    trials = sum(e["n"] for e in evidence)  # the averaged proportion's sampling noise is that of all inputs together
    test = population_excess_test(value, references, evidence[0]["margin"], alpha, trials)
    return Decision(
        test.rejected,
        value,
        test.reference_mean,
        test.t,
        test.p_value,
        f"{'pooled ' if seeds > 1 else ''}{value:.3f} vs {refs} clean models {test.reference_mean:.3f} "
        f"(prediction sd {test.prediction_sd:.3f}), t = {test.t:.2f}, p = {test.p_value:.2g} "
        f"(margin {evidence[0]['margin']:g}, alpha {alpha:.3g}): {'fail' if test.rejected else 'pass'}",
        stderr=math.sqrt(max(value * (1 - value), 0.0) / trials) if trials else None,  # binomial, all inputs
        reference_stderr=test.prediction_sd,
    )


def _shortfall(evidence: list[Evidence], alpha: float) -> Decision:
    d = sum(e["d"] for e in evidence)
    se = math.sqrt(sum(e["se"] ** 2 for e in evidence))
    score = sum(e["score"] for e in evidence) / len(evidence)
    reference = sum(e["reference"] for e in evidence) / len(evidence)
    unmeasured = [str(e["unmeasured"]) for e in evidence if e.get("unmeasured")]  # absent in older reports
    if unmeasured:
        return Decision(True, score, reference, None, None, f"not measured: {unmeasured[0]}", stderr=se / len(evidence))
    if se > 0:
        z = d / se
        p = float(st.norm.sf(z))
        rejected = p < alpha
    else:
        z, p, rejected = (math.inf if d > 0 else -math.inf), None, d > 0
    return Decision(
        rejected,
        score,
        reference,
        z,
        p,
        f"pooled shortfall {d:.3g} ± {se:.2g} (z = {z:.2f}, one-sided, alpha {alpha:.3g}): "
        f"{'fail' if rejected else 'pass'}",
        stderr=se / len(evidence),
    )


def _any(evidence: list[Evidence], alpha: float) -> Decision:
    divisor = evidence[0]["divisor"]
    names = list(evidence[0]["parts"])
    parts = {name: decide([e["parts"][name] for e in evidence], alpha / divisor) for name in names}
    failed = [name for name, d in parts.items() if d.rejected]
    shown = _strongest(parts)
    worst = parts[shown]
    summary = "; ".join(f"{name}: {d.summary}" for name, d in parts.items())
    return Decision(
        bool(failed),
        worst.score,
        worst.reference,
        worst.statistic,
        worst.p_value,
        summary,
        worst.stderr,
        worst.reference_stderr,
        part=shown,
    )


def _strongest(parts: dict[str, Decision]) -> str:
    """The part with the strongest evidence against the method, which a check over parts reports (as one seed's
    relearning check reports its worst k): one with no usable scores, else the smallest p-value, else (a test
    without one: Newcombe-Wilson's lower bound, against the same margin in every part) the largest statistic.
    The parts share one level, so it is a failing part whenever any part fails."""

    def weakness(name: str) -> tuple[int, float]:
        d = parts[name]
        if d.statistic is None:
            return (0, 0.0) if d.rejected else (2, 0.0)
        return (1, d.p_value) if d.p_value is not None else (1, -d.statistic)

    return min(parts, key=weakness)


def _exact(evidence: list[Evidence], alpha: float) -> Decision:
    failed = [e for e in evidence if e["failed"]]
    score = max(e["score"] for e in evidence)
    return Decision(
        bool(failed),
        score,
        None,
        None,
        None,
        f"{len(failed)} of {len(evidence)} seeds failed" if failed else f"every one of {len(evidence)} seeds passed",
        stderr=0.0,
    )


_DECIDERS = {
    "unit_normal": _unit_normal,
    "excess": _excess,
    "prediction": _prediction,
    "population": _population,
    "shortfall": _shortfall,
    "any": _any,
    "exact": _exact,
}
