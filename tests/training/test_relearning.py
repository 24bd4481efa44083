"""The relearning attack: the authors' settings as defaults, the recipe's overrides, a reproducible run."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from unlearn_audit.attacks.base import PoisonMeasurement
from unlearn_audit.checks.relearning_resistant import window_mean
from unlearn_audit.protocol import ExampleSet, TrainingRecipe
from unlearn_audit.training.relearning import attack_from_options, relearn

SGD = TrainingRecipe(optimizer="sgd", lr=0.05, weight_decay=5e-4, batch_size=64)


def test_defaults_are_the_authors_attacker() -> None:
    attack = attack_from_options({}, SGD, num_examples=1437)
    assert attack.optimizer == "adam" and attack.lr == pytest.approx(0.005) and attack.final_lr == pytest.approx(0.0005)
    assert attack.weight_decay == 0.0 and attack.batch_size == 64
    assert attack.steps == 10 * math.ceil(1437 / 64)  # 10 epochs of the attacker's data
    assert attack.window == 1 and attack.augmentation == "none"


def test_recipe_overrides() -> None:
    attack = attack_from_options(
        {
            "optimizer": "recipe",
            "schedule": "constant",
            "lr": 0.02,
            "steps": 100,
            "eval_every": 20,
            "window": 3,
            "batch_size": 32,
            "augmentation": "flip",
        },
        SGD,
        1437,
    )
    assert (attack.optimizer, attack.lr, attack.final_lr, attack.steps, attack.batch_size) == (
        "recipe",
        0.02,
        0.02,
        100,
        32,
    )
    assert attack.weight_decay == SGD.weight_decay  # the recipe's optimizer keeps the recipe's decay
    assert attack.augmentation == "flip" and attack.lr_at(0) == attack.lr_at(99) == 0.02
    assert "read at the mean of the last 3 evaluations" in attack.describe()


def test_cosine_schedule_runs_from_lr_to_a_tenth() -> None:
    attack = attack_from_options({"steps": 100}, SGD, 1437)
    assert attack.lr_at(0) == pytest.approx(0.005)
    assert attack.lr_at(50) == pytest.approx((0.005 + 0.0005) / 2)
    assert attack.lr_at(100) == pytest.approx(0.0005)
    assert all(attack.lr_at(s) >= attack.lr_at(s + 1) for s in range(100))


@pytest.mark.parametrize(
    "options, match",
    [
        ({"optimizer": "lbfgs"}, "relearning optimizer"),
        ({"schedule": "step"}, "relearning schedule"),
        ({"steps": 20, "eval_every": 5, "window": 5}, "window 5 is longer"),
    ],
)
def test_invalid_options_are_refused(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        attack_from_options(options, SGD, 1437)


def _data() -> ExampleSet:
    g = torch.Generator().manual_seed(0)
    return ExampleSet(torch.randn(96, 1, 4, 4, generator=g), torch.randint(0, 3, (96,), generator=g))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_relearn_is_reproducible_and_leaves_the_model_alone() -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attack = attack_from_options({"steps": 7, "eval_every": 3, "window": 2, "augmentation": "flip"}, SGD, 96)
    norms: list[list[float]] = []
    for _ in range(2):
        seen: list[float] = []

        def measure(m: nn.Module, seen: list[float] = seen) -> float:
            seen.append(float(sum(p.detach().norm() for p in m.parameters())))
            return seen[-1]

        curve = relearn(model, _data(), SGD, attack, seed=3, measure=measure)
        norms.append(seen)
        assert [s for s, _ in curve] == [0, 3, 6, 7]
    assert norms[0] == norms[1]
    assert norms[0][-1] != norms[0][0]  # it did train
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # on a copy


def test_window_mean_is_a_conservative_measurement() -> None:
    props = [PoisonMeasurement(v, 0.0, 200, "proportion", v * 200) for v in (0.4, 0.5, 0.6)]
    m = window_mean(props)
    assert m.value == pytest.approx(0.5) and m.hits == pytest.approx(100)
    assert m.stderr == pytest.approx(math.sqrt(0.25 / 200))  # a [0, 1] mean's variance is at most p(1 - p)
    gus = [PoisonMeasurement(v, 0.1, 100, "unit_normal") for v in (0.2, 0.4)]
    g = window_mean(gus)
    assert g.value == pytest.approx(0.3) and g.stderr == pytest.approx(0.1) and g.null == "unit_normal"
    assert window_mean(props[-1:]) is props[-1]
