"""A run's seed parts, kept so that one-seed reports pool into the report of one run over all their seeds."""

from __future__ import annotations

import math

import pytest

from unlearn_audit.checks import evidence
from unlearn_audit.checks.base import CheckResult
from unlearn_audit.checks.pooling import pool_check
from unlearn_audit.checks.seed_parts import SeedParts
from unlearn_audit.stats import Proportion


def leakage(total: float, verdict: str) -> CheckResult:
    return CheckResult(
        check="gaussian_leakage",
        verdict=verdict,
        score=total / 40,
        stderr=1 / math.sqrt(40),
        reference=0.01,
        reference_stderr=1 / math.sqrt(40),
        direction="lower_is_better",
        rule="mean GUS = 0",
        details={
            "evidence": evidence.unit_normal(total, 40),
            "power_effect": 2.0,
            "power_alpha": 0.005,
            "power_two_sided": True,
            "power_critical": None,
            "power_against": "the poisoned original",
            "unmeasured": math.nan,
        },
    )


def utility(correct: int) -> CheckResult:
    return CheckResult(
        check="utility_preserved",
        verdict="pass",
        score=correct / 400,
        stderr=0.02,
        reference=0.9,
        reference_stderr=0.015,
        direction="higher_is_better",
        rule="accuracy",
        details={"evidence": evidence.excess(Proportion(360, 400), Proportion(correct, 400), 0.05, "b")},
    )


def one_seed(seed: int, total: float, verdict: str, correct: int | None = 355) -> SeedParts:
    return SeedParts(
        0.005,
        0.01,
        "; alpha 0.01/2 (2 tests with exact nulls)",
        (seed,),
        (leakage(total, verdict),),
        (utility(correct) if correct is not None else None,),
    )


def test_parts_survive_their_text_with_nan_and_none() -> None:
    parts = one_seed(3, 9.0, "pass").joined(one_seed(4, 10.0, "pass", correct=None))
    back = SeedParts.from_text(parts.to_text())
    assert back.seeds == (3, 4) and back.utility[1] is None and back.utility[0] == parts.utility[0]
    assert back.results[0].details["evidence"] == parts.results[0].details["evidence"]
    assert math.isnan(back.results[0].details["unmeasured"])
    assert (back.alpha, back.utility_alpha, back.family_rule) == (parts.alpha, parts.utility_alpha, parts.family_rule)


def test_pooling_joined_parts_is_pooling_the_run() -> None:
    """Three one-seed runs, each passing alone (z about 2.2 < 2.81), fail once pooled (z about 3.8)."""
    runs = [one_seed(s, 14.0, "pass") for s in (0, 1, 2)]
    joined = runs[0].joined(runs[1]).joined(runs[2])
    whole = SeedParts.from_text(joined.to_text())
    pooled = pool_check(
        "gaussian_leakage",
        list(whole.seeds),
        list(whole.results),
        list(whole.utility),
        whole.alpha,
        whole.utility_alpha,
        whole.family_rule,
    )
    direct = pool_check(
        "gaussian_leakage",
        [0, 1, 2],
        [r.results[0] for r in runs],
        [r.utility[0] for r in runs],
        0.005,
        0.01,
        "; alpha 0.01/2 (2 tests with exact nulls)",
    )
    assert pooled.to_json() == direct.to_json()  # (NaN != NaN: compared as the report has them)
    assert pooled.verdict == "fail" and pooled.details["seeds"] == [0, 1, 2]
    assert all(
        pool_check("gaussian_leakage", [s], [r.results[0]], [r.utility[0]], 0.005, 0.01).verdict == "pass"
        for s, r in zip((0, 1, 2), runs)
    )


def test_runs_judged_differently_or_overlapping_are_refused() -> None:
    a = one_seed(0, 1.0, "pass")
    other_alpha = SeedParts(0.01, 0.01, a.family_rule, (1,), a.results, a.utility)
    with pytest.raises(ValueError, match=r"\(alpha: 0.005 vs 0.01\); were they runs of the same profile and budgets"):
        a.joined(other_alpha)
    other_rule = SeedParts(0.005, 0.01, "", (1,), a.results, a.utility)
    with pytest.raises(ValueError, match="family_rule"):
        a.joined(other_rule)
    with pytest.raises(ValueError, match=r"seed\(s\) \[0\] judged in two runs"):
        a.joined(one_seed(0, 2.0, "pass"))
