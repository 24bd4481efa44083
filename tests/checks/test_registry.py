"""One registry of checks: check X is the module `unlearn_audit.checks.X` and `conformance/test_X.py`;
each recipe's attack must be able to judge every check the recipe lists."""

from __future__ import annotations

import dataclasses
from importlib import import_module, resources

import pytest

from unlearn_audit.attacks.registry import BUILTIN_ATTACKS, get_attack
from unlearn_audit.checks import CHECK_NAMES, REMOVAL_CHECKS, get_check
from unlearn_audit.engine.session import check_recipe
from unlearn_audit.errors import RecipeError
from unlearn_audit.scenarios.recipes import load_profile_recipes, profile_names


@pytest.mark.parametrize("name", CHECK_NAMES)
def test_check_module_and_conformance_test_are_named_after_the_check(name: str) -> None:
    module = import_module(f"unlearn_audit.checks.{name}")
    assert module.NAME == name and get_check(name).__wrapped__ is module.run  # type: ignore[attr-defined]
    assert (resources.files("unlearn_audit.conformance") / f"test_{name}.py").is_file()


def test_removal_checks_are_checks_and_unknown_names_are_refused() -> None:
    assert set(REMOVAL_CHECKS) < set(CHECK_NAMES)
    with pytest.raises(KeyError, match="unknown check 'nope'"):
        get_check("nope")


@pytest.mark.parametrize("kind", sorted(BUILTIN_ATTACKS))
def test_builtin_attacks_declare_what_the_checks_need(kind: str) -> None:
    attack = get_attack(kind)
    assert attack.kind == kind and attack.poison_name and set(attack.checks) <= set(CHECK_NAMES)
    if "targeted_removed" in attack.checks:
        assert attack.targeted_reference in ("retrain", "clean_models")


def test_every_shipped_recipe_is_judgeable() -> None:
    for profile in profile_names():
        for recipe in load_profile_recipes(profile).values():
            check_recipe(recipe)


def test_recipe_errors_name_the_recipe_and_the_problem() -> None:
    recipe = load_profile_recipes("tiny")["gradient_canceling"]
    with pytest.raises(RecipeError, match="tiny/gradient_canceling: attack 'gradient_canceling' cannot be judged by targeted_removed"):
        check_recipe(dataclasses.replace(recipe, checks=(*recipe.checks, "targeted_removed")))
    with pytest.raises(RecipeError, match="unknown attack kind 'nope'"):
        check_recipe(dataclasses.replace(recipe, attack={"kind": "nope"}))
