"""Removal conditioned on utility: a removal check's pass on a wrecked model is a fail."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from synthetic_checks import context, scenario_fixture
from torch import nn

from unlearn_audit.checks import evidence
from unlearn_audit.checks.base import CheckResult
from unlearn_audit.checks.conditioning import conditioned_on_utility
from unlearn_audit.checks.gaussian_leakage import run as gaussian_leakage
from unlearn_audit.checks.pooling import pool_check
from unlearn_audit.checks.utility_preserved import run as utility_preserved
from unlearn_audit.stats import Proportion


def removal(verdict: str, message: str = "") -> CheckResult:
    return CheckResult(
        check="gaussian_leakage",
        verdict=verdict,
        score=0.05,
        stderr=0.1,
        reference=0.0,
        reference_stderr=0.1,
        direction="lower_is_better",
        rule="mean GUS = 0",
        message=message,
        details={"z": 0.5, "evidence": evidence.unit_normal(2.0, 40)},
    )


def utility(verdict: str, score: float = 0.31) -> CheckResult:
    return CheckResult(
        check="utility_preserved",
        verdict=verdict,
        score=score,
        stderr=0.02,
        reference=0.9,
        reference_stderr=0.015,
        direction="higher_is_better",
        rule="accuracy within 0.05 of retrain's",
        message="test accuracy 0.310 is significantly more than 0.05 below retrain's 0.900"
        if verdict == "fail"
        else "",
        details={"evidence": evidence.excess(Proportion(360, 400), Proportion(round(score * 400), 400), 0.05, "b")},
    )


def test_a_removal_pass_on_a_wrecked_model_fails() -> None:
    r = conditioned_on_utility(removal("pass"), utility("fail"))
    assert r.verdict == "fail"
    assert r.message.startswith(
        "the poison metric looks removed, but clean test accuracy 0.310 is significantly below retrain's 0.900"
    )
    assert "removal by destroying the model is not removal" in r.message
    assert r.details["removal_verdict"] == "pass" and r.details["utility_verdict"] == "fail"
    assert r.details["utility_accuracy"] == 0.31 and r.details["utility_retrain_accuracy"] == 0.9
    assert r.rule == "mean GUS = 0; and the utility rule: accuracy within 0.05 of retrain's"
    # what the removal check measured stays as it was
    assert (r.check, r.score, r.reference, r.details["z"]) == ("gaussian_leakage", 0.05, 0.0, 0.5)


def test_a_removal_pass_with_utility_kept_passes_unchanged_but_for_the_rule() -> None:
    before = removal("pass", "low power: 0.40 against the poisoned original")
    r = conditioned_on_utility(before, utility("pass", 0.89))
    assert r.verdict == "pass" and r.message == before.message
    assert r.details["removal_verdict"] == "pass" and r.details["utility_verdict"] == "pass"
    assert r.rule.endswith("; and the utility rule: accuracy within 0.05 of retrain's")


@pytest.mark.parametrize("verdict", ["fail", "xfail", "skip"])
def test_other_removal_verdicts_are_kept(verdict: str) -> None:
    for u in (utility("fail"), utility("pass", 0.9)):
        r = conditioned_on_utility(removal(verdict, "why"), u)
        assert r.verdict == verdict and r.message == "why" and r.details["utility_verdict"] == u.verdict


def test_a_model_wrecked_by_reinitialisation_passes_leakage_alone_and_fails_conditioned() -> None:
    """Built from the checks themselves: a fresh random model has no poison in it and no accuracy either."""
    D, C, K = 128, 3, 40
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(80, D, generator=g), torch.randint(C, (80,), generator=g)
    forget, noise = torch.arange(K), torch.randn(K, D, generator=g)
    retrain = nn.Linear(D, C).eval()
    test_x = torch.randn(300, D, generator=g)
    with torch.no_grad():
        test_y = retrain(test_x).argmax(1)  # retrain is right on every test example
    original = nn.Linear(D, C).eval()
    with torch.no_grad():
        original.weight.add_(0.05 * torch.zeros(C, D).index_add_(0, y[forget], noise))
    tensors = {
        "clean_train_x": x,
        "train_y": y,
        "forget_indices": forget,
        "secret.noise": noise,
        "test_x": test_x,
        "test_y": test_y,
    }
    fixture = scenario_fixture(tensors, original, retrain)
    torch.manual_seed(5)
    ctx = context(fixture, nn.Linear(D, C), {"alpha": 0.01, "margin": 0.05})
    leak, kept = gaussian_leakage(ctx), utility_preserved(ctx)
    assert leak.verdict == "pass" and kept.verdict == "fail" and kept.score < 0.6
    assert conditioned_on_utility(leak, kept).verdict == "fail"


def test_pool_check_conditions_removal_checks_only() -> None:
    # one seed: the pooled removal result is conditioned on that seed's utility
    r = pool_check("gaussian_leakage", [0], [removal("pass")], [utility("fail")], 0.01, 0.01)
    assert r.verdict == "fail" and r.details["removal_verdict"] == "pass"
    # no utility measured (the removal check did not run on a model): nothing to condition on
    alone = pool_check("gaussian_leakage", [0], [removal("pass")], [None], 0.01, 0.01)
    assert alone.verdict == "pass" and "removal_verdict" not in alone.details
    # utility and budget are not removal checks
    u = pool_check("utility_preserved", [0], [utility("pass", 0.9)], [utility("fail")], 0.01, 0.01)
    assert u.verdict == "pass" and "removal_verdict" not in u.details


def test_pool_check_conditions_each_seed_line_too() -> None:
    seeds = [removal("pass"), removal("pass")]
    r = pool_check("gaussian_leakage", [0, 1], seeds, [utility("pass", 0.9), utility("fail")], 0.01, 0.01)
    assert [e["verdict"] for e in r.details["per_seed"]] == ["pass", "fail"]
    assert r.verdict == "fail"  # the pooled utility (0.9 and 0.31 over 800 examples) is far below retrain's
    assert r.details["alpha"] == 0.01
    with_family = pool_check("gaussian_leakage", [0, 1], seeds, [None, None], 0.005, 0.01, "; at alpha/2")
    assert with_family.rule.endswith("; at alpha/2") and with_family.details["alpha"] == 0.005


def test_conditioning_does_not_mutate_its_inputs() -> None:
    before = removal("pass")
    snapshot = dataclasses.asdict(before)
    conditioned_on_utility(before, utility("fail"))
    assert dataclasses.asdict(before) == snapshot
