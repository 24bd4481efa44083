"""`request.validation`: held-out clean data, disjoint from the data the checks evaluate on."""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.data import DataLoader

from unlearn_audit.profiles.data import load_digits_split
from unlearn_audit.protocol import ExampleSet
from unlearn_audit.scenarios.build import hold_out_validation
from unlearn_audit.scenarios.recipes import load_profile_recipes


def test_validation_is_carved_from_the_test_split_disjointly_and_reproducibly() -> None:
    split = load_digits_split()
    rest, (vx, vy) = hold_out_validation(split, 0.25, seed=7)
    assert len(vy) == round(0.25 * len(split.test_y)) and len(rest.test_y) + len(vy) == len(split.test_y)
    rows = {tuple(x.flatten().tolist()) for x in rest.test_x}
    assert not any(tuple(x.flatten().tolist()) in rows for x in vx)  # no image is in both
    assert torch.equal(rest.train_x, split.train_x)  # training data untouched
    again = hold_out_validation(split, 0.25, seed=7)[1]
    assert torch.equal(again[0], vx) and torch.equal(again[1], vy)
    assert hold_out_validation(split, 0.0, seed=7) == (split, None)


def test_a_recipe_with_a_validation_fraction_gives_the_method_a_validation_set(tmp_path) -> None:
    from unlearn_audit.engine.runner import run_unlearner
    from unlearn_audit.scenarios.cache import FixtureCache
    from unlearn_audit.scenarios.fixture import Fixture

    base = load_profile_recipes("tiny")["gaussian"]
    recipe = dataclasses.replace(
        base, data={**base.data, "validation_fraction": 0.2}, training=dataclasses.replace(base.training, epochs=2)
    )
    fixture = Fixture.load(recipe, 0, FixtureCache(tmp_path).get_or_build(recipe, 0))
    seen = {}

    def method(model, request):
        seen["validation"] = request.validation
        # A map-style dataset: the standard DataLoader works over the request's sets.
        seen["batch"] = next(iter(DataLoader(request.retain, batch_size=8, shuffle=True, generator=request.generator)))
        return model

    from unlearn_audit.engine.specs import FunctionUnlearner

    outcome = run_unlearner(
        FunctionUnlearner(method), fixture, budget_fraction=0.1, seed=0, timeout=60, device=torch.device("cpu")
    )
    assert outcome.ok, outcome.error
    validation = seen["validation"]
    assert isinstance(validation, ExampleSet) and len(validation) == round(0.2 * 360)
    assert len(fixture.tensors["test_y"]) == 360 - len(validation)  # the checks never see these images
    x, y = seen["batch"]
    assert x.shape == (8, 1, 32, 32) and y.shape == (8,)


def test_profiles_without_a_validation_fraction_give_an_empty_set(fixtures) -> None:
    empty = fixtures["gaussian"].validation_set()
    assert len(empty) == 0 and empty.inputs.shape[1:] == fixtures["gaussian"].tensors["test_x"].shape[1:]
