"""`targeted_removed` under both of its rules, on synthetic models and scores.

Against retrain (trigger attacks): the registered `backdoor` attack on 600 random 4x4 "images" whose
corner pixel is always 0, and linear models; the poisoned original puts a large weight on that pixel
towards the target class, so the 1-pixel trigger (value 5) sends every triggered input there, while
models without that weight (retrain, the poison removed) send about a third of them (chance). Exact
counts (threshold, degenerate rates) come from a stub attack.

Against clean models (Witches' Brew): a stub attack gives adversarial margins on 4 validated targets
for the method, the original and 8 clean reference models.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats as st
from synthetic_checks import Memo, context, scenario_fixture
from torch import nn

from unlearn_audit.checks import evidence
from unlearn_audit.checks.targeted_removed import attack_hits, run
from unlearn_audit.stats import Proportion, excess_test

OPTIONS = {"alpha": 0.01, "margin": 0.05}
BACKDOOR = {"target_class": 0, "patch_size": 1, "patch_value": 5.0}


def image_model(weight: torch.Tensor, trigger_weight: float) -> nn.Module:
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        m[1].weight.copy_(weight)
        m[1].weight[:, 15] = 0.0
        m[1].weight[0, 15] = trigger_weight  # the corner pixel's pull towards the target class
        m[1].bias.zero_()
    return m.eval()


@pytest.fixture(scope="module")
def backdoor():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 1, 4, 4, generator=g)
    x[..., -1, -1] = 0.0  # clean inputs never have the trigger pixel set
    y = torch.randint(3, (600,), generator=g)
    base, other = torch.randn(3, 16, generator=g), torch.randn(3, 16, generator=g)
    models = {
        "original": image_model(base, 10.0),
        "retrain": image_model(other, 0.0),
        "removed": image_model(base, 0.0),
        "noop": image_model(base, 10.0),
        "partial": image_model(base, 0.6),
    }
    fixture = scenario_fixture(
        {"test_x": x, "test_y": y}, models["original"], models["retrain"], kind="backdoor", attack=BACKDOOR
    )
    return fixture, models


def judge_backdoor(backdoor, method: str, options=OPTIONS):
    fixture, models = backdoor
    return run(context(fixture, models[method], options))


def test_the_poison_removed_passes_against_retrain(backdoor) -> None:
    r = judge_backdoor(backdoor, "removed")
    assert r.verdict == "pass" and r.message == ""
    assert 0.2 < r.score < 0.45 and 0.2 < r.reference < 0.45  # about chance (1/3) for both
    assert r.details["original_attack_success"] == 1.0 and r.details["power"] > 0.999
    assert r.details["excess_lower_bound"] < 0.05
    assert r.reference_label == "retrain" and r.direction == "lower_is_better"
    n = r.details["evidence"]["a"][1]
    assert n == int((backdoor[0].tensors["test_y"] != 0).sum()) and f"n={n} triggered test inputs" in r.rule


def test_doing_nothing_fails_against_retrain(backdoor) -> None:
    r = judge_backdoor(backdoor, "noop")
    assert r.verdict == "fail" and r.score == 1.0
    assert r.message.startswith("the poison still works: attack success 1.000 vs retrain 0.")
    assert "original 1.000" in r.message and r.details["excess_lower_bound"] > 0.5


def test_a_weakened_trigger_far_above_retrain_still_fails(backdoor) -> None:
    r = judge_backdoor(backdoor, "partial")
    assert (
        0.5 < r.score < 0.9 and r.score - r.reference > 4 * 0.05
    )  # a quarter of the effect left, well beyond the margin
    assert r.verdict == "fail"


def test_the_attack_is_measured_once_per_model(backdoor) -> None:
    fixture, models = backdoor
    memo = Memo()
    ctx = context(fixture, models["removed"], OPTIONS, memo=memo)
    run(ctx)
    run(ctx)
    assert memo.computed.count("attack_hits") == 3
    assert attack_hits(ctx, models["removed"]).dtype == torch.bool


class StubTrigger:
    """A trigger attack whose per-input hits on each model are given."""

    kind = "stub_trigger"
    targeted_reference = "retrain"

    def __init__(self, hits: dict[int, torch.Tensor]) -> None:
        self.hits = hits

    def targeted_hits(self, fixture, model):
        return self.hits[id(model)]


def counts(successes: int, n: int) -> torch.Tensor:
    return torch.arange(n) < successes


def judge_counts(method: int, retrain: int, original: int, n: int = 400, options=OPTIONS):
    models = [nn.Linear(2, 2) for _ in range(3)]
    attack = StubTrigger({id(m): counts(c, n) for m, c in zip(models, (method, retrain, original))})
    fixture = scenario_fixture(
        {"test_x": torch.zeros(5, 2), "test_y": torch.zeros(5, dtype=torch.long)}, models[2], models[1], kind="backdoor"
    )
    return run(context(fixture, models[0], options, attack=attack))


def test_an_excess_of_exactly_the_margin_passes() -> None:
    r = judge_counts(60, 40, 400)  # 0.15 vs 0.10
    assert r.verdict == "pass" and r.score == 0.15 and r.reference == 0.1
    assert r.details["excess_lower_bound"] < 0.05


def test_the_verdict_is_the_newcombe_wilson_test() -> None:
    for method, retrain in ((100, 40), (80, 40), (400, 0), (0, 0), (0, 400), (400, 400)):
        r = judge_counts(method, retrain, 400)
        test = excess_test(Proportion(method, 400), Proportion(retrain, 400), 0.05, 0.01)
        assert (r.verdict == "fail") == test.rejected and r.details["excess_lower_bound"] == test.lower_bound
        assert evidence.decide([r.details["evidence"]], 0.01).rejected == test.rejected
    assert judge_counts(100, 40, 400).verdict == "fail"  # 0.25 vs 0.10: three times the margin
    assert judge_counts(400, 0, 400).verdict == "fail" and judge_counts(0, 0, 400).verdict == "pass"


def test_an_attack_that_never_worked_gives_no_power() -> None:
    r = judge_counts(0, 0, 0)
    assert r.verdict == "pass" and r.details["power"] == 0.0 and "no number of seeds up to 100" in r.message


def test_no_triggered_inputs_is_not_a_pass() -> None:
    r = judge_counts(0, 0, 0, n=0)
    assert r.verdict == "fail" and "no triggered test inputs" in r.message


class StubBrew:
    """A clean-label attack with per-target adversarial margins for each model and the clean references."""

    kind = "stub_brew"
    targeted_reference = "clean_models"

    def __init__(self, margins: dict[int, torch.Tensor], clean: torch.Tensor, notes: dict | None = None) -> None:
        self.margins, self.clean, self.notes = margins, clean, notes or {}

    def target_scores(self, fixture, model, memo=None):
        return self.margins[id(model)]

    def clean_model_target_scores(self, fixture, memo=None):
        return self.clean

    def target_notes(self, fixture):
        return dict(self.notes)


K, CLEAN = 4, 8


@pytest.fixture(scope="module")
def clean_margins() -> torch.Tensor:
    """Clean models' margins on the targets: safely classified, about -2 logits, spread 1 between models."""
    g = torch.Generator().manual_seed(3)
    return -2.0 + torch.randn(CLEAN + 1, K, generator=g)  # the last row: one more clean model, the method


def judge_brew(method_margins: torch.Tensor, clean: torch.Tensor, original=None, options=None, notes=None):
    method, original_m, retrain = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)
    margins = {
        id(method): method_margins,
        id(original_m): original if original is not None else torch.full((len(method_margins),), 3.0),
    }
    attack = StubBrew(margins, clean, notes)
    fixture = scenario_fixture(
        {"test_x": torch.zeros(5, 2), "test_y": torch.zeros(5, dtype=torch.long)},
        original_m,
        retrain,
        kind="witches_brew",
    )
    return run(context(fixture, method, options or {"alpha": 0.01}, attack=attack))


def test_a_model_like_the_clean_ones_passes_against_clean_models(clean_margins) -> None:
    r = judge_brew(clean_margins[-1], clean_margins[:CLEAN])
    assert r.verdict == "pass" and r.message == ""
    assert r.details["t"] < 1.5 and r.details["p_value"] > 0.1  # critical t at 0.01 with 7 df: 3.0
    assert r.reference_label == "8 clean models" and r.details["validated_targets"] == K
    assert r.score == pytest.approx(float(torch.sigmoid(clean_margins[-1]).mean()))
    assert r.reference == pytest.approx(float(torch.sigmoid(clean_margins[:CLEAN]).mean()))
    assert r.stderr == pytest.approx(float(torch.sigmoid(clean_margins[-1]).std() / 2))
    assert r.details["original_soft_attack_success"] == pytest.approx(float(torch.sigmoid(torch.tensor(3.0))))
    assert r.details["power"] > 0.99


def test_doing_nothing_fails_against_clean_models(clean_margins) -> None:
    r = judge_brew(torch.full((K,), 3.0), clean_margins[:CLEAN])
    assert r.verdict == "fail" and r.details["p_value"] < 1e-4
    assert r.message.startswith("the poison still works: soft attack success 0.953 vs clean models")
    assert "the attack succeeds on 4/4 targets" in r.message and r.details["attack_success"] == 1.0


def test_targets_pushed_back_only_to_the_boundary_still_fail(clean_margins) -> None:
    r = judge_brew(torch.zeros(K), clean_margins[:CLEAN])  # soft success 0.5: half the original's excess left
    assert r.score == 0.5 and r.verdict == "fail" and r.details["attack_success"] == 0.0


def test_the_rule_is_the_one_sided_prediction_test(clean_margins) -> None:
    refs = torch.sigmoid(clean_margins[:CLEAN]).mean(dim=1)
    sd = float(refs.std()) * math.sqrt(1 + 1 / CLEAN)
    critical = float(st.t.isf(0.01, CLEAN - 1))
    for t in (critical * 0.95, critical * 1.05):
        # method margins whose soft success sits t prediction sds above the clean mean
        soft = float(refs.mean()) + t * sd
        r = judge_brew(torch.full((K,), math.log(soft / (1 - soft))), clean_margins[:CLEAN])
        assert r.details["t"] == pytest.approx(t, rel=1e-4)
        assert r.verdict == ("fail" if t > critical else "pass")
        assert evidence.decide([r.details["evidence"]], 0.01).rejected == (r.verdict == "fail")
    much_lower = judge_brew(torch.full((K,), -8.0), clean_margins[:CLEAN])
    assert much_lower.verdict == "pass" and much_lower.details["t"] < 0  # one-sided


def test_identical_clean_models_judge_exactly(clean_margins) -> None:
    same = clean_margins[:1].repeat(CLEAN, 1)
    assert judge_brew(clean_margins[0], same).verdict == "pass"
    above = judge_brew(clean_margins[0] + 0.5, same)
    assert above.verdict == "fail" and above.details["power"] == 1.0 and above.reference_stderr == 0.0


def test_one_target_is_judged_but_its_evidence_asks_for_more(clean_margins) -> None:
    r = judge_brew(
        clean_margins[-1, :1], clean_margins[:CLEAN, :1], options={"alpha": 0.01, "min_validated_targets": 3}
    )
    assert r.stderr is None and r.details["validated_targets"] == 1
    assert r.details["evidence"]["k"] == 1 and r.details["evidence"]["min_k"] == 3


def test_fallback_targets_are_named_in_the_rule(clean_margins) -> None:
    r = judge_brew(
        clean_margins[-1],
        clean_margins[:CLEAN],
        notes={"target_selection": "random", "target_fallback": "random target not fooled"},
    )
    assert "low-margin fallback" in r.rule and r.details["target_fallback"] == "random target not fooled"
    plain = judge_brew(clean_margins[-1], clean_margins[:CLEAN])
    assert "fallback" not in plain.rule


def test_an_untargeted_attack_is_refused() -> None:
    fixture = scenario_fixture({}, nn.Linear(2, 2), nn.Linear(2, 2), kind="gaussian")
    with pytest.raises(ValueError, match="'gaussian' is not a targeted attack"):
        run(context(fixture, nn.Linear(2, 2), OPTIONS))
