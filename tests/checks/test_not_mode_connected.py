"""`not_mode_connected` on small MLPs whose loss barriers are known by construction.

The poisoned original is a random 8-32-3 ReLU network labelling 300 random test inputs (its own
argmax, so it fits them perfectly). Retrain is the same function with its hidden units permuted: an
equally good model in another basin, and the straight path between the two crosses a loss barrier
(averaging mismatched units). A model in the original's basin (the original itself, or a point part
of the way towards retrain) has no barrier on its path. The poison metric along the path comes from a
stub attack (it is reported, not judged).
"""

from __future__ import annotations

import copy

import pytest
import torch
from synthetic_checks import Memo, context, scenario_fixture
from torch import nn

from unlearn_audit.attacks.base import PoisonMeasurement
from unlearn_audit.checks import evidence
from unlearn_audit.checks.not_mode_connected import path_profile, run
from unlearn_audit.training.interpolation import interpolate

D, H, C, M = 8, 32, 3, 300
OPTIONS = {"alpha": 0.01, "min_barrier_fraction": 0.25, "points": 21}


class StubPoison:
    """The poison metric along the path: here the mean of the last layer's weights, to see it move."""

    def measure_poison(self, fixture, model, held_out=None, memo=None):
        return PoisonMeasurement(float(model[-1].weight.detach().mean()), 0.0, 1, "proportion", 0)


def permuted(model: nn.Sequential, perm: torch.Tensor) -> nn.Sequential:
    out = copy.deepcopy(model)
    with torch.no_grad():
        out[0].weight.copy_(model[0].weight[perm])
        out[0].bias.copy_(model[0].bias[perm])
        out[2].weight.copy_(model[2].weight[:, perm])
    return out.eval()


@pytest.fixture(scope="module")
def world():
    torch.manual_seed(0)
    original = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, C))
    with torch.no_grad():
        for p in original.parameters():
            p.mul_(3.0)  # confident: low loss at both ends of the path
    g = torch.Generator().manual_seed(0)
    x = torch.randn(M, D, generator=g)
    with torch.no_grad():
        y = original(x).argmax(1)
    retrain = permuted(original, torch.randperm(H, generator=g))
    models = {
        "original": original.eval(),
        "retrain": retrain,
        "retrained": copy.deepcopy(retrain),  # a method that returns what retraining gives
        "other_basin": permuted(original, torch.randperm(H, generator=g)),
        "noop": copy.deepcopy(original),
        "partway": interpolate(original, retrain, 0.3),  # moved 30% of the way towards retrain
    }
    return {"test_x": x, "test_y": y}, models


def judge(world, method: str, options=None, retrain: str = "retrain", memo: Memo | None = None):
    tensors, models = world
    fixture = scenario_fixture(tensors, models["original"], models[retrain])
    return run(context(fixture, models[method], {**OPTIONS, **(options or {})}, memo=memo, attack=StubPoison()))


def test_the_retrained_model_passes_with_retrains_barrier(world) -> None:
    r = judge(world, "retrained")
    assert r.verdict == "pass" and r.message == ""
    assert r.score > 0.1 and r.score == pytest.approx(r.reference)
    assert 0 < r.stderr < r.score / 4 and r.reference_stderr == pytest.approx(r.stderr)
    assert r.details["l2_ratio"] == pytest.approx(1.0) and r.details["l2_distance"] > 0
    assert 0 < r.details["barrier_alpha"] < 1
    assert r.details["power"] == 1.0  # the original's own path has no barrier: it fails for certain
    assert r.direction == "higher_is_better" and "21 points" in r.rule and "0.25 x retrain's" in r.rule


def test_another_basin_passes(world) -> None:
    r = judge(world, "other_basin")
    assert r.verdict == "pass" and r.score > 0.25 * r.reference + 4 * r.stderr


def test_doing_nothing_fails_without_a_barrier(world) -> None:
    r = judge(world, "noop")
    assert r.verdict == "fail" and r.score < 1e-9 and r.details["l2_distance"] == 0.0
    assert r.message.startswith("the unlearned model is still linearly connected to the poisoned original: barrier")
    assert "L2 distance 0 vs retrain" in r.message
    assert r.details["l2_ratio"] == 0.0


def test_a_model_moved_partway_towards_retrain_is_still_in_the_basin(world) -> None:
    r = judge(world, "partway")
    assert r.verdict == "fail" and r.score < 0.02 * r.reference
    assert 0.25 < r.details["l2_ratio"] < 0.35  # it did move: the distance alone would not show the basin


def test_the_path_is_reported_point_by_point(world) -> None:
    r = judge(world, "retrained", {"points": 11})
    path = r.details["path"]
    assert path["alphas"] == [i / 10 for i in range(11)]
    assert len(path["test_loss"]) == len(path["test_accuracy"]) == len(path["poison"]) == 11
    assert path["test_accuracy"][0] == 1.0 and path["test_accuracy"][-1] == 1.0  # both ends fit the labels
    assert max(path["test_loss"]) > path["test_loss"][0] + 0.1  # the barrier in the middle
    assert path["poison"][0] != path["poison"][-1]  # the stub's metric was measured on every point of the path
    assert r.details["error_barrier"] > 0 and r.details["retrain_error_barrier"] == r.details["error_barrier"]
    assert "11 points" in r.rule


def test_a_barrier_exactly_at_the_threshold_passes(world) -> None:
    # fraction 1: the threshold is retrain's own barrier, which the retrained model has exactly (z = 0)
    r = judge(world, "retrained", {"min_barrier_fraction": 1.0})
    assert r.score == pytest.approx(r.reference) and r.verdict == "pass"
    # a rule stricter than retrain itself meets fails it; one five times looser still fails the partway model
    assert judge(world, "retrained", {"min_barrier_fraction": 3.0}).verdict == "fail"
    assert judge(world, "partway", {"min_barrier_fraction": 0.05}).verdict == "fail"


def test_without_a_barrier_for_retrain_nothing_can_fail_and_it_says_so(world) -> None:
    """Linear models: logits are linear along the path and the loss convex in them, so no path has a
    barrier; the threshold is 0 and even the unremoved poison passes, with the power saying so."""
    tensors, _ = world
    torch.manual_seed(1)
    original, retrain = nn.Sequential(nn.Linear(D, C)).eval(), nn.Sequential(nn.Linear(D, C)).eval()
    fixture = scenario_fixture(tensors, original, retrain)
    r = run(context(fixture, copy.deepcopy(original), OPTIONS, attack=StubPoison()))
    assert r.reference == 0.0 and r.verdict == "pass"
    assert r.details["power"] == 0.0 and "low power: 0.00" in r.message
    assert "no number of seeds up to 100 reaches 0.8" in r.message


def test_a_rounding_level_barrier_does_not_claim_certain_power(world) -> None:
    r = judge(world, "noop", retrain="noop")
    assert r.reference < 1e-12 and r.verdict == "pass"  # the unremoved poison passes...
    assert r.details["power"] < 0.8  # ...so the check cannot claim to detect it


def test_the_evidence_reproduces_the_verdict(world) -> None:
    for method in ("retrained", "other_basin", "noop", "partway"):
        r = judge(world, method)
        ev = r.details["evidence"]
        assert ev["kind"] == "shortfall" and ev["score"] == r.score and ev["reference"] == r.reference
        assert ev["d"] == pytest.approx(0.25 * r.reference - r.score)
        assert evidence.decide([ev], 0.01).rejected == (r.verdict == "fail")


def test_the_path_is_measured_once_per_model_and_number_of_points(world) -> None:
    tensors, models = world
    fixture = scenario_fixture(tensors, models["original"], models["retrain"])
    memo = Memo()
    ctx = context(fixture, models["retrained"], OPTIONS, memo=memo, attack=StubPoison())
    run(ctx)
    run(ctx)
    assert memo.computed == ["path-21", "path-21"]  # the method's and retrain's
    assert path_profile(ctx, models["retrain"], 21) is path_profile(ctx, models["retrain"], 21)
    path_profile(ctx, models["retrain"], 5)
    assert memo.computed[-1] == "path-5"


@pytest.mark.parametrize("scale", [1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e20, 1e37, 1e38])
def test_an_output_layer_scaled_up_is_not_a_barrier(world, scale: float) -> None:
    """The original with its last layer multiplied by `scale`: the same predictions, no real barrier (the loss
    is convex in the logits' scale), but losses so large that their rounding swamps a barrier's size. Such a
    path shows nothing, so it must not pass."""
    tensors, models = world
    wrong = torch.arange(M) % 50 == 0  # a few labels wrong, so that losses grow with the scale
    tensors = {**tensors, "test_y": torch.where(wrong, (tensors["test_y"] + 1) % C, tensors["test_y"])}
    scaled = copy.deepcopy(models["original"])
    with torch.no_grad():
        scaled[-1].weight.mul_(scale)
        scaled[-1].bias.mul_(scale)
    fixture = scenario_fixture(tensors, models["original"], models["retrain"])
    r = run(context(fixture, scaled, OPTIONS, attack=StubPoison()))
    assert r.verdict == "fail", (r.score, r.stderr, r.reference)
    assert r.message.startswith(("the unlearned model is still linearly connected", "the loss barrier on the path"))
    assert evidence.decide([r.details["evidence"]], 0.01).rejected
    unscaled = run(context(fixture, copy.deepcopy(models["retrained"]), OPTIONS, attack=StubPoison()))
    assert unscaled.verdict == "pass" and not unscaled.details["evidence"]["unmeasured"]  # the same labels


def test_a_seed_not_measured_fails_the_pool(world) -> None:
    measured = judge(world, "retrained").details["evidence"]
    broken = {**measured, "score": 1e28, "se": 2e28, "d": -1e28, "unmeasured": "rounding"}
    assert not evidence.decide([measured, measured], 0.01).rejected
    decision = evidence.decide([measured, broken], 0.01)
    assert decision.rejected and "not measured: rounding" in decision.summary
    old_report = {k: v for k, v in measured.items() if k != "unmeasured"}  # written before the field existed
    assert not evidence.decide([old_report], 0.01).rejected
