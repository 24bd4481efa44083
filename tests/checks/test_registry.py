"""One registry of checks: check X is the module `unlearn_audit.checks.X`, which declares itself
(`CHECK = CheckInfo(...)`), and `conformance/test_X.py`; the lists of checks follow from the declarations.
Each recipe's attack must be able to judge every check the recipe lists."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from importlib import import_module, resources

import pytest

from unlearn_audit.attacks.registry import BUILTIN_ATTACKS, get_attack
from unlearn_audit.checks import CHECK_INFO, CHECK_NAMES, REMOVAL_CHECKS, CheckInfo, _declaration, check_info, get_check
from unlearn_audit.engine.session import check_recipe
from unlearn_audit.errors import RecipeError
from unlearn_audit.scenarios.recipes import load_profile_recipes, profile_names

CONFORMANCE = resources.files("unlearn_audit.conformance")
UNITS = {"fraction", "z-score", "nats", "example-gradients"}


@pytest.mark.parametrize("name", CHECK_NAMES)
def test_check_module_and_conformance_test_are_named_after_the_check(name: str) -> None:
    module = import_module(f"unlearn_audit.checks.{name}")
    assert module.CHECK == CHECK_INFO[name] == check_info(name), "the declaration read from the source is the module's"
    assert module.CHECK.name == name and get_check(name).__wrapped__ is module.run  # type: ignore[attr-defined]
    assert (CONFORMANCE / f"test_{name}.py").is_file(), f"check {name!r} has no conformance/test_{name}.py"


def test_every_conformance_module_judges_the_declared_check_it_is_named_after() -> None:
    modules = sorted(
        e.name[len("test_") : -len(".py")]
        for e in CONFORMANCE.iterdir()
        if e.name.startswith("test_") and e.name.endswith(".py")
    )
    assert modules == sorted(CHECK_NAMES), "a conformance module without a declared check, or the reverse"
    for name in modules:
        test = getattr(import_module(f"unlearn_audit.conformance.test_{name}"), f"test_{name}")
        assert [m.args for m in test.pytestmark if m.name == "audit_check"] == [(name,)], name


def test_the_lists_of_checks_follow_from_the_declarations() -> None:
    assert CHECK_NAMES == tuple(sorted(CHECK_INFO))
    assert REMOVAL_CHECKS == tuple(n for n in CHECK_NAMES if CHECK_INFO[n].kind == "removal")
    # Which checks are removal checks decides verdicts (they are conditioned on utility): a change must be deliberate.
    assert set(REMOVAL_CHECKS) == {
        "gaussian_leakage",
        "targeted_removed",
        "indiscriminate_restored",
        "relearning_resistant",
        "not_mode_connected",
    }
    for info in CHECK_INFO.values():
        assert info.kind in ("removal", "other") and info.metric
        assert info.unit in UNITS or (info.name == "relearning_resistant" and info.unit == ""), info


def test_removal_checks_are_checks_and_unknown_names_are_refused() -> None:
    assert set(REMOVAL_CHECKS) < set(CHECK_NAMES)
    with pytest.raises(KeyError, match="unknown check 'nope'; known: budget_respected, "):
        get_check("nope")
    with pytest.raises(KeyError, match="unknown check 'nope'"):
        check_info("nope")


def test_declarations_are_read_without_importing_torch() -> None:
    code = (
        "import sys; from unlearn_audit.checks import REMOVAL_CHECKS; "
        "from unlearn_audit.checks.pooling import pool_check; "
        "assert 'torch' not in sys.modules; print(len(REMOVAL_CHECKS))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "5", out.stderr


def test_a_declaration_must_be_literal() -> None:
    literal = 'CHECK = CheckInfo(name="x", kind="other", metric="m", unit="fraction")\ndef run(ctx): ...\n'
    assert _declaration(literal, "m") == CheckInfo(name="x", kind="other", metric="m", unit="fraction")
    assert _declaration("NAME = 'x'\n", "m") is None  # a helper module, not a check
    assert _declaration('CHECK: CheckInfo = CheckInfo("x", "removal", "m", "z-score")\n', "m") == CheckInfo(
        name="x", kind="removal", metric="m", unit="z-score"
    )
    with pytest.raises(TypeError, match="must be literals"):
        _declaration('CHECK = CheckInfo(name=NAME, kind="other", metric="m", unit="")\n', "m")


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
    with pytest.raises(
        RecipeError, match="tiny/gradient_canceling: attack 'gradient_canceling' cannot be judged by targeted_removed"
    ):
        check_recipe(dataclasses.replace(recipe, checks=(*recipe.checks, "targeted_removed")))
    with pytest.raises(RecipeError, match="unknown attack kind 'nope'"):
        check_recipe(dataclasses.replace(recipe, attack={"kind": "nope"}))
