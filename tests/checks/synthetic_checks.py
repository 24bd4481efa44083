"""Small synthetic contexts for the unit tests of the checks (tests/checks/test_<check>.py).

A check is called as the session calls it, `run(CheckContext(fixture, outcome, options, measure))`,
on a real `Fixture` record holding a few hundred random tensors and tiny models built by hand
(no training, no cache, nothing downloaded). Helpers:

- `scenario_fixture`: a `Fixture` of a synthetic recipe around given tensors and models;
- `Memo`: the session's `measure` (memoised per model object), which a test may also fill with
  measurements ahead of the check, as the session's stored reference measurements are;
- `context`: the `CheckContext` a check receives, optionally with a stub attack in place of the
  recipe's registered one;
- `accuracy_models`: one-hot test inputs and linear models whose test accuracy is exactly what a
  test asks for, so that the counts a proportion test sees are exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unlearn_audit.checks.base import CheckContext
from unlearn_audit.engine.runner import UnlearnOutcome
from unlearn_audit.protocol import Budget, TrainingRecipe
from unlearn_audit.scenarios.fixture import Fixture
from unlearn_audit.scenarios.recipes import ScenarioRecipe


def recipe(
    kind: str = "gaussian",
    attack: dict[str, Any] | None = None,
    clean_models: int = 0,
    training: TrainingRecipe | None = None,
) -> ScenarioRecipe:
    return ScenarioRecipe(
        profile="synthetic",
        name=f"synthetic-{kind}",
        description="unit test",
        checks=(),
        data={},
        model={},
        training=training or TrainingRecipe(epochs=1, batch_size=32),
        attack={"kind": kind, **(attack or {})},
        references={"clean_models": clean_models} if clean_models else {},
    )


def scenario_fixture(
    tensors: dict[str, torch.Tensor],
    original: nn.Module,
    retrain: nn.Module,
    *,
    kind: str = "gaussian",
    attack: dict[str, Any] | None = None,
    num_classes: int = 3,
    clean_models: Sequence[nn.Module] = (),
    seed: int = 0,
    training: TrainingRecipe | None = None,
    meta: dict[str, Any] | None = None,
) -> Fixture:
    def factory() -> nn.Module:
        raise AssertionError("a check must not build new models")

    return Fixture(
        recipe(kind, attack, len(clean_models), training),
        seed,
        Path("/nonexistent-fixture"),
        {"num_classes": num_classes, **(meta or {})},
        tensors,
        original.eval(),
        retrain.eval(),
        factory,
        [m.eval() for m in clean_models],
    )


class Memo:
    """`measure(model, name, compute)` memoised per model object, as `AuditSession.measure` is."""

    def __init__(self) -> None:
        self.values: dict[tuple[int, str], tuple[nn.Module, Any]] = {}
        self.computed: list[str] = []

    def __call__(self, model: nn.Module, name: str, compute: Callable[[], Any]) -> Any:
        key = (id(model), name)
        if key not in self.values:
            value = compute()
            self.computed.append(name)
            self.values[key] = (model, value)  # the model is kept alive, so its id cannot be reused
        return self.values[key][1]

    def store(self, model: nn.Module, name: str, value: Any) -> None:
        """A measurement the check will read back instead of computing it (the session's stored ones)."""
        self.values[(id(model), name)] = (model, value)


@dataclass
class StubAttackContext(CheckContext):
    """A `CheckContext` whose attack is `stub` rather than the registered attack of the recipe's kind."""

    stub: Any = None

    @property
    def attack(self) -> Any:  # type: ignore[override]
        return self.stub


def outcome(
    model: nn.Module | None, example_gradients: int = 0, budget: Budget | None = None, **kw: Any
) -> UnlearnOutcome:
    return UnlearnOutcome(model, example_gradients, 0.25, budget or Budget(0.1, 1000), **kw)


def context(
    fixture: Fixture,
    model: nn.Module | None,
    options: dict[str, Any] | None = None,
    *,
    memo: Memo | None = None,
    attack: Any = None,
    **outcome_kw: Any,
) -> CheckContext:
    out = outcome(model.eval() if model is not None else None, **outcome_kw)
    if attack is not None:
        return StubAttackContext(fixture, out, dict(options or {}), memo or Memo(), stub=attack)
    return CheckContext(fixture, out, dict(options or {}), memo or Memo())


def one_hot_test_set(labels: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    """Test input i is the i-th unit vector: a linear model's column i decides test example i alone."""
    return {"test_x": torch.eye(len(labels)), "test_y": labels.clone()}


def model_with_correct(labels: torch.Tensor, correct: int, num_classes: int) -> nn.Linear:
    """A bias-free linear model on `one_hot_test_set(labels)` that gets exactly the first `correct` examples right
    (the others are predicted as the next class)."""
    n = len(labels)
    model = nn.Linear(n, num_classes, bias=False)
    with torch.no_grad():
        model.weight.zero_()
        predicted = labels.clone()
        predicted[correct:] = (labels[correct:] + 1) % num_classes
        model.weight[predicted, torch.arange(n)] = 1.0
    return model.eval()


def accuracy_models(
    n: int, num_classes: int, *correct: int, seed: int = 0
) -> tuple[dict[str, torch.Tensor], list[nn.Linear]]:
    """(test tensors of `n` examples, one model per count in `correct` with exactly that many right)."""
    labels = torch.randint(num_classes, (n,), generator=torch.Generator().manual_seed(seed))
    return one_hot_test_set(labels, num_classes), [model_with_correct(labels, c, num_classes) for c in correct]
