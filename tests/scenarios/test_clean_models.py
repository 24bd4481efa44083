"""`[references] clean_models`: a population of models retrained from other seeds, kept in the fixture."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unlearn_audit.engine.runner import run_unlearner
from unlearn_audit.scenarios.fixture import Fixture
from unlearn_audit.scenarios.recipes import load_profile_recipes, parse_recipe

RECIPE = """
[scenario]
name = "s"
checks = ["utility_preserved"]
[data]
source = "digits"
[model]
architecture = "mlp"
[training]
[attack]
kind = "backdoor"
"""


@pytest.mark.parametrize(
    "table, match",
    [
        ("[references]\nclean_models = 1\n", "integer >= 2"),
        ("[references]\nclean_models = -3\n", "integer >= 2"),
        ("[references]\nclean_models = 'many'\n", "integer >= 2"),
        ("[references]\ndirty_models = 2\n", "takes only clean_models"),
    ],
)
def test_invalid_references_are_refused(table: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_recipe("p", RECIPE + table, "p/s.toml")


def test_recipes_without_references_keep_their_cache_keys() -> None:
    plain = parse_recipe("p", RECIPE)
    assert "references" not in plain.build_spec(0) and plain.clean_models == 0
    with_models = parse_recipe("p", RECIPE + "[references]\nclean_models = 4\n")
    assert with_models.build_spec(0)["references"] == {"clean_models": 4}
    assert with_models.cache_key(0) != plain.cache_key(0)
    assert dataclasses.replace(with_models, references={}).cache_key(0) == plain.cache_key(0)


def test_backdoor_fixture_holds_distinct_clean_models(fixtures: dict) -> None:
    f: Fixture = fixtures["backdoor"]
    assert f.recipe.clean_models == 24 and len(f.clean_models) == 24
    flat = [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in (f.retrain, *f.clean_models)]
    assert all(not torch.equal(a, b) for i, a in enumerate(flat) for b in flat[i + 1 :])  # each from its own seed
    assert set(f.reference_models()) == {"retrain", *(f"clean{j}" for j in range(1, 25))}
    test_x, test_y = f.tensors["test_x"], f.tensors["test_y"]
    with torch.no_grad():
        accuracies = [float((m(test_x).argmax(1) == test_y).float().mean()) for m in f.clean_models]
    assert min(accuracies) > 0.9  # working clean models, like retrain


def test_the_fingerprint_covers_the_clean_models(fixtures: dict) -> None:
    f: Fixture = fixtures["backdoor"]
    before = f.fingerprint()
    with torch.no_grad():
        p = next(f.clean_models[3].parameters())
        saved = p.clone()
        p.add_(1.0)
        changed = f.fingerprint()
        p.copy_(saved)
    assert changed != before and f.fingerprint() == before


def test_returning_a_clean_model_fails_like_returning_retrain(fixtures: dict) -> None:
    f: Fixture = fixtures["backdoor"]
    stolen = {k: v.clone() for k, v in f.clean_models[5].state_dict().items()}  # as read from the cache on disk

    class Thief:
        def unlearn(self, model, request):
            model.load_state_dict(stolen)
            return model

    outcome = run_unlearner(Thief(), f, budget_fraction=0.1, seed=1, timeout=60, device=torch.device("cpu"))
    assert not outcome.ok and "reference model 'clean6' (a clean model)" in (outcome.error or "")


def test_only_the_backdoor_scenario_of_tiny_carries_clean_models() -> None:
    counts = {name: r.clean_models for name, r in load_profile_recipes("tiny").items()}
    assert counts == {
        "backdoor": 24,
        "gaussian": 0,
        "gradient_canceling": 0,
        "gradient_canceling_low": 0,
        "witches_brew": 0,
    }
