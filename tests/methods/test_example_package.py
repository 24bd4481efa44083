"""The example method package a method author copies (`examples/my_unlearner`): both forms it shows load
through `--unlearner` specs and run on the real tiny fixtures within budget, so the template stays working
as the protocol moves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unlearn_audit.engine.runner import run_unlearner
from unlearn_audit.engine.specs import check_spec, resolve_unlearner
from unlearn_audit.scenarios.fixture import Fixture

EXAMPLE = Path(__file__).parents[2] / "examples" / "my_unlearner"


@pytest.mark.parametrize(
    ("spec", "kind"),
    [("my_unlearner.method:FinetuneThenDampen", "class"), ("my_unlearner.method:finetune", "function")],
)
def test_the_example_methods_run_within_budget(
    spec: str, kind: str, fixtures: dict[str, Fixture], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    assert check_spec(spec) == kind
    fixture = fixtures["backdoor"]
    outcome = run_unlearner(
        resolve_unlearner(spec), fixture, budget_fraction=0.1, seed=0, timeout=120, device=torch.device("cpu")
    )
    assert outcome.ok, outcome.error
    assert 0 < outcome.example_gradients <= outcome.budget.example_gradients
    before, after = fixture.original.state_dict(), outcome.model.state_dict()
    assert any(not torch.equal(after[name], before[name]) for name in before), "the method left the model unchanged"
