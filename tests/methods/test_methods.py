"""The reference unlearners: each runs on the real tiny fixtures within its budget, changes the model,
is reproducible for a seed, and survives degenerate requests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearn_audit.engine.counting import ExampleGradientCounter
from unlearn_audit.engine.runner import run_unlearner
from unlearn_audit.methods import (
    SCRUB,
    SSD,
    CatastrophicForgettingK,
    ExactUnlearningK,
    GradientAscent,
    GradientDescent,
    NegGradPlus,
    NoisyGradientDescent,
    NoOp,
    Retrain,
    SalUn,
)
from unlearn_audit.profiles.models import small_cnn
from unlearn_audit.protocol import Budget, ExampleSet, TrainingRecipe, UnlearningRequest
from unlearn_audit.scenarios.fixture import Fixture

CPU = torch.device("cpu")

METHODS = [
    NoOp(),
    Retrain(),
    GradientDescent(),
    GradientAscent(),
    NoisyGradientDescent(),
    NegGradPlus(),
    ExactUnlearningK(),
    ExactUnlearningK(k=2),
    CatastrophicForgettingK(),
    SCRUB(),
    SalUn(),
    SSD(),
]


def method_id(method) -> str:
    k = getattr(method, "k", None)
    return type(method).__name__ + (f"-k{k}" if k is not None else "")


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([t.flatten().float() for t in model.state_dict().values()])


def run(method, fixture: Fixture):
    return run_unlearner(
        method,
        fixture,
        budget_fraction=0.1,
        seed=7,
        timeout=120,
        device=CPU,
        exempt_from_budget=isinstance(method, Retrain),
    )


@pytest.mark.parametrize("scenario", ["gaussian", "backdoor"])
@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_method_on_tiny_fixture(method, scenario: str, fixtures: dict[str, Fixture]) -> None:
    """ok, within budget as the harness counts (Retrain exempt), changes the model (NoOp excepted),
    and the same seed gives bit-identical weights."""
    fixture = fixtures[scenario]
    first, second = run(method, fixture), run(method, fixture)
    assert first.ok, first.error
    assert second.ok, second.error
    if not isinstance(method, Retrain):
        assert first.example_gradients <= first.budget.example_gradients
    if not isinstance(method, NoOp):
        assert first.example_gradients > 0
        assert not torch.equal(flat(first.model), flat(fixture.original)), "the method left the model unchanged"
    assert torch.equal(flat(first.model), flat(second.model)), "same seed, different weights"


def toy_request(size: int, budget: int = 20, factory=None) -> tuple[UnlearningRequest, ExampleGradientCounter]:
    counter = ExampleGradientCounter()
    gen = torch.Generator().manual_seed(0)
    base = factory or (lambda: nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)))
    shape = (1, 8, 8) if factory is not None else (6,)
    retain = ExampleSet(torch.randn(30, *shape, generator=gen), torch.randint(0, 3, (30,), generator=gen))
    forget = ExampleSet(torch.randn(size, *shape, generator=gen), torch.randint(0, 3, (size,), generator=gen))
    request = UnlearningRequest(
        forget, retain, Budget(0.1, budget), TrainingRecipe(batch_size=8, epochs=5), base, 3, CPU, 0, gen
    )
    return request, counter


@pytest.mark.parametrize("size", [0, 1])
@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_methods_handle_tiny_forget_sets(method, size: int, unlearn_sanely) -> None:
    """Empty and one-sample forget sets: no crash, finite weights, same architecture, data untouched,
    budget respected."""
    request, counter = toy_request(size)
    with counter:
        unlearn_sanely(method, request)
    if not isinstance(method, Retrain):
        assert counter.total <= request.budget.example_gradients


class TwoLayer(nn.Module):
    """Not an nn.Sequential: EU-k / CF-k must take the generic (whole-net, frozen body) path."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(64, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x.flatten(1))))


@pytest.mark.parametrize("cls", [ExactUnlearningK, CatastrophicForgettingK])
@pytest.mark.parametrize("factory", [TwoLayer, lambda: small_cnn((1, 8, 8), 3, [4, 4])], ids=["generic", "bn-cnn"])
def test_last_layer_methods_touch_only_the_last_layer(cls, factory) -> None:
    request, counter = toy_request(5, budget=40, factory=factory)
    model = request.model_factory()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    requires = [p.requires_grad for p in model.parameters()]
    head = "head" if isinstance(model, TwoLayer) else str(len(model) - 1)
    with counter:
        out = cls(k=1).unlearn(model, request)
    for name, value in out.state_dict().items():
        changed = not torch.equal(value, before[name])
        assert changed == name.startswith(head + "."), name  # BN statistics of the frozen body stay too
    assert [p.requires_grad for p in out.parameters()] == requires
    assert 0 < counter.total <= 40
