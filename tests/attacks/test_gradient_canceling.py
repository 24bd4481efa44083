"""Gradient Canceling (indiscriminate poisoning): the attack on small synthetic inputs, the
`gradient_canceling` fixture build and its validation, and the `indiscriminate_restored` check."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.attacks.gradient_canceling import (
    GradientCancelingPoison,
    canceling_objective,
    gradpc,
    loss_gradient,
    make_gradient_canceling,
)

N, D, C = 100, 8, 3


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, C))


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(N, D, generator=gen(1))
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()  # a learnable 3-class rule
    return x, y


@pytest.fixture
def trained(data: tuple[torch.Tensor, torch.Tensor]) -> nn.Module:
    x, y = data
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def distance(a: nn.Module, b: nn.Module) -> float:
    return math.sqrt(sum(float((p - q).detach().pow(2).sum()) for p, q in zip(a.parameters(), b.parameters())))


def mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


# --------------------------------------------------------------------------- GradPC


@pytest.mark.parametrize("radius", [0.0, 0.1, 0.5, 2.0])
def test_gradpc_stays_within_its_l2_radius_and_raises_the_loss(trained: nn.Module, data, radius: float) -> None:
    x, y = data
    before = copy.deepcopy(trained.state_dict())
    target = gradpc(trained, x, y, radius, steps=15)
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in before.items()), "the clean model must not change"
    d = distance(target, trained)
    assert d <= radius * (1 + 1e-5) + 1e-7
    if radius > 0:
        assert d == pytest.approx(radius, rel=1e-3), "normalised ascent reaches the ball's surface"
        assert mean_loss(target, x, y) > mean_loss(trained, x, y)
    else:
        assert d == 0.0


def test_gradpc_loss_grows_with_the_radius(trained: nn.Module, data) -> None:
    x, y = data
    losses = [mean_loss(gradpc(trained, x, y, r, steps=15), x, y) for r in (0.1, 0.5, 2.0)]
    assert losses == sorted(losses)


def test_gradpc_rejects_a_negative_radius(trained: nn.Module, data) -> None:
    with pytest.raises(ValueError, match="radius"):
        gradpc(trained, *data, -1.0)


# --------------------------------------------------------------------------- gradient canceling


def test_canceling_objective_is_the_squared_norm_of_the_poisoned_training_gradient(trained: nn.Module, data) -> None:
    x, y = data
    px, py = torch.randn(5, D, generator=gen(2)), torch.tensor([0, 1, 2, 0, 1])
    wd = 1e-2
    clean = loss_gradient(trained, x, y)
    got = canceling_objective(trained, clean, N, px, py, weight_decay=wd)
    # Direct: gradient of the mean loss over clean + poison, plus the weight-decay term.
    loss = F.cross_entropy(trained(torch.cat([x, px])), torch.cat([y, py]))
    grads = torch.autograd.grad(loss, list(trained.parameters()))
    want = sum(float((g + wd * p.detach()).pow(2).sum()) for g, p in zip(grads, trained.parameters()))
    assert float(got) == pytest.approx(want, rel=1e-4)


def test_canceling_objective_decreases(trained: nn.Module, data) -> None:
    x, y = data
    target = gradpc(trained, x, y, 0.5, steps=10)
    px, py, secret = make_gradient_canceling(target, x, y, 10, gen(0), steps=60, lr=0.05, record_every=10)
    assert isinstance(secret, GradientCancelingPoison)
    h = secret.objective_history
    assert len(h) == 7 and h[0] == pytest.approx(secret.objective_initial)
    assert secret.objective_final < 0.5 * secret.objective_initial
    assert h[-1] < h[0]
    assert sum(b < a for a, b in zip(h, h[1:])) >= len(h) - 2, f"mostly decreasing: {h}"
    # The returned poisons achieve the reported objective.
    with torch.enable_grad():
        clean = loss_gradient(target, x, y)
        value = float(canceling_objective(target, clean, N, px, py, weight_decay=0.0))
    assert value == pytest.approx(secret.objective_final, rel=1e-4)


def test_poisons_start_from_training_points_and_keep_their_labels(trained: nn.Module, data) -> None:
    x, y = data
    x0, y0 = x.clone(), y.clone()
    target = gradpc(trained, x, y, 0.5, steps=5)
    state = copy.deepcopy(target.state_dict())
    px, py, secret = make_gradient_canceling(target, x, y, 12, gen(3), steps=5)
    assert torch.equal(x, x0) and torch.equal(y, y0), "inputs must not be modified"
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in state.items()), "the target must not change"
    idx = secret.base_indices
    assert idx.shape == (12,) and len(idx.unique()) == 12 and torch.equal(idx, idx.sort().values)
    assert torch.equal(secret.base_inputs, x[idx]) and torch.equal(py, y[idx]) and torch.equal(secret.labels, py)
    assert px.shape == (12, D) and not torch.equal(px, x[idx])


def test_clamp_bounds_the_poisons(trained: nn.Module, data) -> None:
    x, y = data
    target = gradpc(trained, x, y, 0.5, steps=5)
    px, _, _ = make_gradient_canceling(target, x, y, 8, gen(0), steps=30, lr=0.5, clamp=(-1.0, 1.0))
    assert float(px.min()) >= -1.0 and float(px.max()) <= 1.0


def test_attack_is_deterministic_for_a_seed(trained: nn.Module, data) -> None:
    x, y = data
    target = gradpc(trained, x, y, 0.5, steps=10)
    assert torch.equal(next(gradpc(trained, x, y, 0.5, steps=10).parameters()), next(target.parameters()))
    a = make_gradient_canceling(target, x, y, 10, gen(7), steps=20)
    b = make_gradient_canceling(target, x, y, 10, gen(7), steps=20)
    c = make_gradient_canceling(target, x, y, 10, gen(8), steps=20)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2].base_indices, b[2].base_indices)
    assert not torch.equal(a[2].base_indices, c[2].base_indices)


def test_num_poisons_is_checked(trained: nn.Module, data) -> None:
    with pytest.raises(ValueError, match="num_poisons"):
        make_gradient_canceling(trained, *data, 0, gen(0))
    with pytest.raises(ValueError, match="num_poisons"):
        make_gradient_canceling(trained, *data, N + 1, gen(0))


# --------------------------------------------------------------------------- fixture build

FAST_RECIPE = """
[scenario]
name = "gc_fast"
checks = ["indiscriminate_restored", "utility_preserved", "budget_respected"]
build_attempts = 1  # the test builds an attack that cannot work (radius 0): one build, no rebuilds
[data]
source = "digits"
image_size = 8
[model]
architecture = "mlp"
hidden = [32]
[training]
epochs = 3
[attack]
kind = "gradient_canceling"
poison_fraction = 0.02
radius = {radius}
gradpc_steps = 5
canceling_steps = 40
[checks.indiscriminate_restored]
min_accuracy_drop = 0.10
"""


@pytest.mark.parametrize("radius", [0.0])
def test_fast_build_stores_poisons_as_the_forget_set_and_validates(radius: float) -> None:
    from unlearn_audit.profiles.data import load_split
    from unlearn_audit.scenarios.build import build_scenario
    from unlearn_audit.scenarios.recipes import parse_recipe

    recipe = parse_recipe("tiny", FAST_RECIPE.format(radius=radius))
    stages: set[str] = set()
    built = build_scenario(recipe, 0, progress=lambda stage, done, total, s: stages.add(stage))
    split = load_split("digits", image_size=8)
    n = len(split.train_y)
    k = round(0.02 * n)
    t = built.tensors
    assert t["train_x"].shape[0] == t["train_y"].shape[0] == t["clean_train_x"].shape[0] == n + k
    assert torch.equal(t["forget_indices"], torch.arange(n, n + k))
    assert torch.equal(t["train_x"][:n], split.train_x) and torch.equal(t["train_y"][:n], split.train_y)
    base = t["secret.base_indices"]
    assert torch.equal(t["clean_train_x"][n:], split.train_x[base]) and torch.equal(
        t["train_y"][n:], split.train_y[base]
    )
    assert set(built.weights) == {"original", "retrain", "target"}
    assert {
        "attacker's clean model",
        "GradPC target",
        "gradient-canceling poison",
        "original model",
        "retrain model",
    } <= stages
    v = built.meta["validation"]
    assert {
        "original_test_accuracy",
        "retrain_test_accuracy",
        "accuracy_drop",
        "accuracy_drop_lower_bound",
        "original_parameter_norm",
        "effective",
        "rule",
    } <= set(v)
    assert isinstance(v["effective"], bool) and "0.1" in v["rule"]
    # accuracies are float32 means, the drop an exact difference of counts
    assert v["accuracy_drop"] == pytest.approx(v["retrain_test_accuracy"] - v["original_test_accuracy"], abs=1e-6)
    # Radius 0: the target is the clean model itself, so the attack cannot work and must say so.
    assert v["effective"] is False
    a = built.meta["attack"]
    assert a["num_poisons"] == k and a["target_distance"] == pytest.approx(radius, abs=1e-6)
    assert a["objective_final"] <= a["objective_initial"]
    # Deterministic for a seed.
    again = build_scenario(recipe, 0)
    assert all(torch.equal(t[name], again.tensors[name]) for name in t)


def test_shipped_recipe_declares_the_attack() -> None:
    from unlearn_audit.checks import CHECK_NAMES
    from unlearn_audit.scenarios.recipes import load_profile_recipes

    recipe = load_profile_recipes("tiny")["gradient_canceling"]
    assert recipe.attack["kind"] == "gradient_canceling" and recipe.model["architecture"] == "mlp"
    assert "indiscriminate_restored" in recipe.checks and set(recipe.checks) <= set(CHECK_NAMES)
    assert (
        recipe.options("indiscriminate_restored")["min_accuracy_drop"]
        > recipe.options("indiscriminate_restored")["margin"]
    )


# --------------------------------------------------------------------------- the check


class Fixed(nn.Module):
    """A stand-in model (its per-sample correctness is set by the context's `measure`)."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.one_hot(x[:, 0].long(), 10).float() + 0 * self.dummy


def check_context(original_correct: int, retrain_correct: int, method_correct: int, n: int = 360):
    """A check context whose three models get exactly the given numbers of the n test points right."""
    from unlearn_audit.checks.base import CheckContext

    y = torch.arange(n) % 10
    models = {name: Fixed() for name in ("original", "retrain", "method")}
    counts = {
        id(models["original"]): original_correct,
        id(models["retrain"]): retrain_correct,
        id(models["method"]): method_correct,
    }

    def measure(model: nn.Module, name: str, compute):
        hits = torch.zeros(n, dtype=torch.bool)
        hits[: counts[id(model)]] = True
        return hits

    fixture = SimpleNamespace(
        tensors={"test_x": torch.zeros(n, 1), "test_y": y}, original=models["original"], retrain=models["retrain"]
    )
    outcome = SimpleNamespace(model=models["method"])
    return CheckContext(fixture, outcome, {"alpha": 0.01, "margin": 0.05}, measure)


def test_indiscriminate_restored_fails_noop_and_passes_retrain() -> None:
    from unlearn_audit.checks.indiscriminate_restored import damage_repaired, run

    noop = run(check_context(200, 350, 200))
    assert noop.verdict == "fail" and noop.details["damage_repaired"] == pytest.approx(0.0)
    assert "damage" in noop.message and noop.reference == pytest.approx(350 / 360)
    retrain = run(check_context(200, 350, 348))
    assert retrain.verdict == "pass" and retrain.details["damage_repaired"] == pytest.approx(148 / 150)
    half = run(check_context(200, 350, 275))
    assert half.verdict == "fail" and half.details["damage_repaired"] == pytest.approx(0.5)
    assert half.direction == "higher_is_better" and "Newcombe-Wilson" in half.rule
    assert math.isnan(damage_repaired(0.9, 0.95, 0.95))


def test_poison_metric_is_clean_test_error() -> None:
    from unlearn_audit.attacks.registry import get_attack

    attack = get_attack("gradient_canceling")

    y = torch.arange(40) % 10
    pred = y.clone()
    pred[:10] = (pred[:10] + 1) % 10  # 10 of 40 wrong
    model = nn.Linear(10, 10, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(10))
    fixture = SimpleNamespace(tensors={"test_x": F.one_hot(pred, 10).float(), "test_y": y})
    m = attack.measure_poison(fixture, model)
    assert (m.value, m.hits, m.n, m.null) == (0.25, 10, 40, "proportion") and m.stderr == pytest.approx(
        (0.25 * 0.75 / 40) ** 0.5
    )
    assert attack.poison_name == "clean test error"
