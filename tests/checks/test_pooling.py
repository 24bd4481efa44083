"""Pooling seeds: one verdict from every seed's evidence, exact where the one-seed test is."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from unlearn_audit.checks import evidence
from unlearn_audit.checks.base import CheckResult
from unlearn_audit.checks.family import family_size, has_exact_null
from unlearn_audit.checks.pooling import pool
from unlearn_audit.scenarios.recipes import load_profile_recipes
from unlearn_audit.stats import Proportion, excess_test, unit_normal_mean_test, z_power


def _result(verdict: str, ev: dict, score: float = 0.0, effect: float = 3.0) -> CheckResult:
    return CheckResult(
        check="gaussian_leakage",
        verdict=verdict,
        score=score,
        stderr=0.1,
        reference=0.0,
        reference_stderr=0.1,
        direction="lower_is_better",
        rule="r",
        details={
            "evidence": ev,
            "power_effect": effect,
            "power_alpha": 0.01,
            "power_two_sided": True,
            "power_critical": None,
            "power_against": "the poisoned original",
        },
    )


@given(st.lists(st.lists(st.floats(-4, 4), min_size=1, max_size=30), min_size=1, max_size=5))
@settings(max_examples=60, deadline=None)
def test_unit_normal_pooling_is_the_z_test_of_all_scores(seeds: list[list[float]]) -> None:
    pooled = evidence.decide([evidence.unit_normal(sum(s), len(s)) for s in seeds], 0.01)
    flat = unit_normal_mean_test([v for s in seeds for v in s], 0.01, alternative="two-sided")
    assert pooled.rejected == flat.rejected and math.isclose(pooled.statistic, flat.z, rel_tol=1e-9, abs_tol=1e-9)


def test_one_seed_decision_equals_the_check_test() -> None:
    a, b = Proportion(30, 100), Proportion(12, 100)
    one = evidence.decide([evidence.excess(a, b, 0.05, "a")], 0.01)
    assert one.rejected == excess_test(a, b, 0.05, 0.01).rejected and one.score == 0.3 and one.reference == 0.12


def test_excess_pools_counts() -> None:
    # Each seed alone: 9/40 vs 2/40 is not significant beyond a 0.05 margin at 0.01; five such seeds are.
    seeds = [evidence.excess(Proportion(9, 40), Proportion(2, 40), 0.05, "a")] * 5
    assert not evidence.decide(seeds[:1], 0.01).rejected
    assert evidence.decide(seeds, 0.01).rejected


def test_retrain_false_failures_do_not_grow_with_seeds() -> None:
    """A test per seed fails an exact null with probability ~N alpha; the pooled test stays at alpha."""
    rng = random.Random(0)
    alpha, runs, n = 0.05, 2000, 20
    per_seed_any = pooled = 0
    for _ in range(runs):
        seeds = [[rng.gauss(0, 1) for _ in range(n)] for _ in range(5)]
        ev = [evidence.unit_normal(sum(s), n) for s in seeds]
        per_seed_any += any(evidence.decide([e], alpha).rejected for e in ev)
        pooled += evidence.decide(ev, alpha).rejected
    assert per_seed_any / runs > 0.15  # ~1 - 0.95^5 = 0.23
    assert pooled / runs < 0.08  # ~0.05


def test_prediction_pools_targets_and_clean_models() -> None:
    refs = [[0.2, 0.3, 0.25, 0.28, 0.22, 0.3, 0.27, 0.24]] * 3
    quiet = [evidence.prediction(0.5 * 3, 3, [r * 3 for r in rr]) for rr in refs]
    d = evidence.decide(quiet, 0.01)
    assert d.rejected and math.isclose(d.score, 0.5) and math.isclose(d.reference, sum(refs[0]) / 8)


def test_shortfall_and_any_and_exact() -> None:
    assert evidence.decide([evidence.shortfall(0.01, 0.01, 0.0, 0.1)] * 9, 0.01).rejected
    assert not evidence.decide([evidence.shortfall(0.01, 0.01, 0.0, 0.1)], 0.01).rejected
    parts = evidence.any_of({"k=0": evidence.unit_normal(0.0, 10), "k=1": evidence.unit_normal(20.0, 10)}, 2)
    assert evidence.decide([parts], 0.01).rejected
    assert evidence.decide([evidence.exact(False, 1), evidence.exact(True, 2)], 0.01).rejected
    with pytest.raises(ValueError, match="different kinds"):
        evidence.decide([evidence.exact(False, 1), evidence.unit_normal(0, 1)], 0.01)


def test_pool_keeps_one_seed_and_lists_every_seed() -> None:
    one = _result("pass", evidence.unit_normal(1.0, 10))
    alone = pool([0], [one], 0.01)  # the seed's own result, with the MDE of its test added
    assert _without_mde(alone) == one
    assert alone.details["mde"] == pytest.approx((norm.isf(0.005) + norm.ppf(0.8)) / 10**0.5, rel=1e-3)
    results = [_result("pass", evidence.unit_normal(8.0, 10)) for _ in range(3)]
    pooled = pool([0, 1, 2], results, 0.01)
    assert pooled.verdict == "fail" and "pooled over seeds [0, 1, 2]" in pooled.message
    assert [e["seed"] for e in pooled.details["per_seed"]] == [0, 1, 2]
    # An effect of 3 per seed is 3 sqrt(3) over three seeds; one seed alone has power 0.73.
    assert pooled.details["power"] == pytest.approx(z_power(3 * math.sqrt(3), 0.01, two_sided=True))
    assert z_power(3, 0.01, two_sided=True) < 0.8 < pooled.details["power"]


def test_pool_leaves_out_unjudgeable_seeds_and_surfaces_failures() -> None:
    xfail = CheckResult(
        check="gaussian_leakage",
        verdict="xfail",
        score=None,
        stderr=None,
        reference=None,
        reference_stderr=None,
        direction="lower_is_better",
        rule="v",
        message="attack did not work",
    )
    ok = _result("pass", evidence.unit_normal(0.0, 10))
    pooled = pool([0, 1], [xfail, ok], 0.01)
    assert pooled.verdict == "pass" and pooled.details["left_out_seeds"] == [0] and "seed 0 left out" in pooled.message
    crashed = CheckResult(
        check="gaussian_leakage",
        verdict="fail",
        score=None,
        stderr=None,
        reference=None,
        reference_stderr=None,
        direction="lower_is_better",
        rule="u",
        message="unlearn() raised",
    )
    pooled = pool([0, 1], [ok, crashed], 0.01)
    assert pooled.verdict == "fail" and pooled.message.startswith("seed 1: unlearn() raised")


def test_tiny_family_of_exact_nulls() -> None:
    recipes = load_profile_recipes("tiny")
    exact = sorted((name, c) for name, r in recipes.items() for c in r.checks if has_exact_null(c, r))
    assert exact == [
        ("backdoor", "relearning_resistant"),
        ("gaussian", "gaussian_leakage"),
        ("gaussian", "relearning_resistant"),
        ("witches_brew", "targeted_removed"),
    ]
    assert family_size(recipes.values(), budgets=2) == 8


def _targets(verdict: str, k: int, min_k: int = 3) -> CheckResult:
    """A Witches' Brew result on `k` validated targets (soft score 0.9 vs clean models near 0.2)."""
    return CheckResult(
        check="targeted_removed",
        verdict=verdict,
        score=0.9,
        stderr=None,
        reference=0.2,
        reference_stderr=0.05,
        direction="lower_is_better",
        rule="prediction t-test",
        details={
            "evidence": evidence.prediction(0.9 * k, k, [(0.2 + 0.01 * j) * k for j in range(8)], min_k=min_k),
            "power_effect": 3.0,
            "power_alpha": 0.01,
            "power_two_sided": False,
            "power_critical": None,
            "power_against": "the poisoned original",
        },
    )


def test_one_target_per_seed_is_judged_only_once_the_pool_has_enough() -> None:
    """cifar10-resnet18 brews one target per fixture: one seed has too few targets for the test (xfail,
    naming the remedy), three validated seeds have three and are judged by the pooled prediction test."""
    alone = pool([0], [_targets("fail", 1)], 0.01)
    assert alone.verdict == "xfail" and alone.score is None
    assert "only 1 validated target over seed 0" in alone.message and "--audit-seeds" in alone.message
    assert alone.details["needed_targets"] == 3
    two = pool([0, 1, 2], [_targets("fail", 1), _targets("xfail", 0), _targets("fail", 1)], 0.01)
    assert two.verdict == "xfail" and two.details["validated_targets"] == 2 and two.details["left_out_seeds"] == [1]
    assert len(two.details["per_seed"]) == 3
    three = pool([0, 1, 2], [_targets("fail", 1)] * 3, 0.01)
    assert three.verdict == "fail" and three.details["pooled_test"].startswith(
        "pooled soft attack success 0.900 over 3 targets"
    )
    # tiny: every effective fixture has >= 3 validated targets, so a one-seed result stands as it is.
    r = _targets("pass", 3)
    assert _without_mde(pool([0], [r], 0.01)) == r


def test_evidence_without_a_minimum_is_never_short() -> None:
    old = _targets("pass", 1)
    del old.details["evidence"]["min_k"]  # evidence written before the minimum existed
    assert _without_mde(pool([0], [old], 0.01)) == old


def _without_mde(result: CheckResult) -> CheckResult:
    """A one-seed result as the check returned it: `pool` only adds the MDE of its test."""
    assert result.details["mde"] > 0
    kept = {k: v for k, v in result.details.items() if not k.startswith("mde")}
    return dataclasses.replace(result, details=kept)
