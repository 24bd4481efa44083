"""`gaussian_leakage` on linear models whose dependence on the secret noise is built in.

40 of 80 random training inputs (256 features, 3 classes) are poisons with secret N(0, I) noise.
A linear model trained on the poisons moves each class's weights along the noise of that class's
poisons; here the poisoned original is W0 + c * sum_i e_{y_i} xi_i^T (c = 0.05), which makes every
poison's Gaussian Unlearning Score strongly positive (mean about 3, z about 20), and W0 alone (the
poison removed) is independent of the noise, so its scores are exactly N(0, 1). The rule's
thresholds are also tested on scores stored in the memo, as the session stores measurements.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats as st
from synthetic_checks import Memo, context, scenario_fixture
from torch import nn

from unlearn_audit.checks import evidence
from unlearn_audit.checks.gaussian_leakage import gus_scores, run

D, C, N, K = 256, 3, 80, 40
ALPHA = 0.01
CRITICAL = float(st.norm.isf(ALPHA / 2))  # 2.576: |z| beyond it fails
DETECTABLE_MEAN = (CRITICAL + float(st.norm.isf(0.2))) / math.sqrt(K)  # the mean GUS detected with power 0.8: 0.54


def linear(weight: torch.Tensor) -> nn.Linear:
    m = nn.Linear(D, C)
    with torch.no_grad():
        m.weight.copy_(weight)
        m.bias.zero_()
    return m.eval()


@pytest.fixture(scope="module")
def world():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    y = torch.randint(C, (N,), generator=g)
    forget = torch.randperm(N, generator=g)[:K].sort().values
    noise = torch.randn(K, D, generator=g)
    base = torch.randn(C, D, generator=g) * 0.05
    other = torch.randn(C, D, generator=g) * 0.05  # an independently "retrained" model
    leak = torch.zeros(C, D).index_add_(0, y[forget], noise)
    tensors = {
        "clean_train_x": x,
        "train_x": x.clone(),
        "train_y": y,
        "forget_indices": forget,
        "secret.noise": noise,
        "test_x": torch.randn(60, D, generator=g),
        "test_y": torch.randint(C, (60,), generator=g),
    }
    models = {
        "original": linear(base + 0.05 * leak),
        "retrain": linear(other),
        "removed": linear(base),  # the same model without the poison's trace
        "noop": linear(base + 0.05 * leak),
        "partial": linear(base + 0.005 * leak),  # a tenth of the trace left
        "overcorrected": linear(base - 0.05 * leak),  # pushed against the noise: still depends on it
        "dead": linear(torch.zeros(C, D)),  # constant logits: every input gradient is zero
    }
    return tensors, models


def judge(world, method: str, options=None, memo: Memo | None = None, original: str = "original"):
    tensors, models = world
    fixture = scenario_fixture(tensors, models[original], models["retrain"])
    return run(context(fixture, models[method], {"alpha": ALPHA, "tpr_at_fpr": 0.01, **(options or {})}, memo=memo))


def test_the_poison_removed_passes(world) -> None:
    r = judge(world, "removed")
    assert r.verdict == "pass" and r.message == ""
    assert abs(r.details["z"]) < 1.5  # exactly N(0, 1) under the null; this seed is far inside the 2.58 bound
    assert r.details["num_poisons"] == K and len(r.details["scores"]) == K
    assert r.stderr == pytest.approx(1 / math.sqrt(K)) and r.reference_stderr == pytest.approx(1 / math.sqrt(K))
    assert abs(r.reference) < 3 / math.sqrt(K) and r.reference == r.details["retrain_gus"]
    assert r.details["tpr_at_fpr_0.01"] < 0.1
    assert r.details["original_z"] > 15 and r.details["power"] > 0.999  # the test could have failed
    assert "two-sided z-test at alpha=0.01" in r.rule and "se = 1/sqrt(40)" in r.rule


def test_doing_nothing_fails_with_the_leak_quantified(world) -> None:
    r = judge(world, "noop")
    assert r.verdict == "fail"
    assert r.score > 2 and r.details["z"] > 15 and r.details["p_value"] < 1e-10
    assert r.details["tpr_at_fpr_0.01"] > 0.5 and r.details["tpr_interval_95"][0] > 0.4
    assert r.message.startswith("the model still depends on the forget-set noise: mean GUS")
    assert f"original {r.details['original_gus']:.3f}" in r.message and "retrain" in r.message


def test_a_partial_removal_beyond_the_detectable_effect_fails(world) -> None:
    r = judge(world, "partial")
    assert r.score > 2 * DETECTABLE_MEAN and r.score < judge(world, "noop").score / 2
    assert r.verdict == "fail"


def test_overcorrection_is_leakage_too(world) -> None:
    r = judge(world, "overcorrected")
    assert r.score < -2 and r.verdict == "fail" and "z = -" in r.message


def test_no_usable_scores_fail(world) -> None:
    r = judge(world, "dead")
    assert r.verdict == "fail" and r.message == "no usable GUS values (every input gradient was zero)"
    assert math.isnan(r.score) and r.details["num_poisons"] == 0 and r.details["scores"] == []
    assert r.details["evidence"] == evidence.unit_normal(0.0, 0, "two-sided")
    assert evidence.decide([r.details["evidence"]], ALPHA).rejected  # pooled, still no evidence of removal
    assert r.to_json()["score"] is None  # strict JSON in the report


def test_poisons_with_a_zero_input_gradient_are_left_out(world) -> None:
    """Behind a ReLU, an input with no positive feature has a zero gradient: its score is NaN and dropped."""
    tensors, models = world
    tensors = dict(tensors)
    x = tensors["clean_train_x"].clone()
    dropped = tensors["forget_indices"][:7]
    x[dropped] = -x[dropped].abs()
    tensors["clean_train_x"] = x

    def relu(m: nn.Linear) -> nn.Module:
        return nn.Sequential(nn.ReLU(), m).eval()

    fixture = scenario_fixture(tensors, relu(models["original"]), relu(models["retrain"]))
    removed = run(context(fixture, relu(models["removed"]), {"alpha": ALPHA}))
    assert removed.details["num_poisons"] == K - 7 and len(removed.details["scores"]) == K - 7
    assert removed.verdict == "pass" and math.isfinite(removed.score)
    noop = run(context(fixture, relu(models["noop"]), {"alpha": ALPHA}))
    assert noop.details["num_poisons"] == K - 7 and noop.verdict == "fail"


def stored(world, mean: float, options=None):
    """The check's verdict on K scores all equal to `mean` (stored in the memo before the check runs)."""
    _, models = world
    method = linear(torch.zeros(C, D))
    memo = Memo()
    memo.store(method, "gus", torch.full((K,), mean, dtype=torch.float64))
    return judge_model(world, method, memo, options)


def judge_model(world, method: nn.Module, memo: Memo, options=None):
    tensors, models = world
    fixture = scenario_fixture(tensors, models["original"], models["retrain"])
    return run(context(fixture, method, {"alpha": ALPHA, **(options or {})}, memo=memo))


def test_the_threshold_is_the_two_sided_normal_quantile(world) -> None:
    inside = CRITICAL * 0.97 / math.sqrt(K)
    outside = CRITICAL * 1.03 / math.sqrt(K)
    assert stored(world, inside).verdict == "pass" and stored(world, -inside).verdict == "pass"
    assert stored(world, outside).verdict == "fail" and stored(world, -outside).verdict == "fail"
    assert stored(world, 0.0).details["p_value"] == 1.0


def test_alpha_comes_from_the_options(world) -> None:
    z3 = 3.0 / math.sqrt(K)  # p = 0.0027
    assert stored(world, z3).verdict == "fail"
    assert stored(world, z3, {"alpha": 0.001}).verdict == "pass"
    assert "alpha=0.001" in stored(world, z3, {"alpha": 0.001}).rule


def test_the_evidence_reproduces_the_verdict(world) -> None:
    for method in ("removed", "noop", "partial", "overcorrected"):
        r = judge(world, method)
        ev = r.details["evidence"]
        assert ev["n"] == K and ev["sum"] == pytest.approx(r.score * K)
        d = evidence.decide([ev], ALPHA)
        assert d.rejected == (r.verdict == "fail") and d.statistic == pytest.approx(r.details["z"])


def test_a_pass_against_an_original_without_leak_says_it_has_low_power(world) -> None:
    r = judge(world, "removed", original="removed")
    assert r.verdict == "pass" and r.details["power"] < 0.2
    assert "low power" in r.message and "against the poisoned original" in r.message


def test_scores_are_measured_once_per_model(world) -> None:
    tensors, models = world
    fixture = scenario_fixture(tensors, models["original"], models["retrain"])
    memo = Memo()
    ctx = context(fixture, models["noop"], {}, memo=memo)
    first = gus_scores(ctx, models["noop"])
    assert gus_scores(ctx, models["noop"]) is first and memo.computed == ["gus"]
    run(ctx)
    assert memo.computed.count("gus") == 3  # the method's, retrain's and the original's
