"""The family of tests with exact nulls, on synthetic recipes: which (check, attack) meets its null exactly,
and how many such tests one unlearner meets in a run (their Bonferroni divisor)."""

from __future__ import annotations

import dataclasses

import pytest
from synthetic_checks import recipe

from unlearn_audit.checks import CHECK_NAMES
from unlearn_audit.checks.family import family_size, has_exact_null

ALWAYS_MARGIN = ("utility_preserved", "budget_respected", "not_mode_connected", "indiscriminate_restored")


def with_checks(kind: str, checks: tuple[str, ...], clean_models: int = 0):
    return dataclasses.replace(recipe(kind, clean_models=clean_models), checks=checks)


@pytest.mark.parametrize("kind", ["gaussian", "backdoor", "gradient_canceling", "witches_brew"])
def test_tests_with_a_margin_never_have_an_exact_null(kind: str) -> None:
    for check in ALWAYS_MARGIN:
        assert not has_exact_null(check, recipe(kind)) and not has_exact_null(check, recipe(kind, clean_models=8))


def test_gaussian_leakage_always_has_an_exact_null() -> None:
    assert has_exact_null("gaussian_leakage", recipe("gaussian"))


def test_relearning_is_exact_on_the_forget_set_or_against_clean_models() -> None:
    assert has_exact_null("relearning_resistant", recipe("gaussian"))  # held-out GUS: N(0, 1)
    assert not has_exact_null("relearning_resistant", recipe("backdoor"))  # Newcombe with a margin against retrain
    assert has_exact_null("relearning_resistant", recipe("backdoor", clean_models=8))  # one more clean model


def test_targeted_removal_is_exact_against_clean_models_only() -> None:
    assert has_exact_null("targeted_removed", recipe("witches_brew"))
    assert not has_exact_null("targeted_removed", recipe("backdoor"))


def test_family_size_counts_every_scenario_and_budget() -> None:
    gaussian = with_checks(
        "gaussian",
        ("gaussian_leakage", "relearning_resistant", "not_mode_connected", "utility_preserved", "budget_respected"),
    )
    backdoor = with_checks("backdoor", ("targeted_removed", "relearning_resistant", "utility_preserved"))
    backdoor_clean = with_checks("backdoor", backdoor.checks, clean_models=8)
    assert family_size([gaussian]) == 2
    assert family_size([gaussian, backdoor]) == 2
    assert family_size([gaussian, backdoor_clean]) == 3
    assert family_size([gaussian, backdoor_clean], budgets=3) == 9


def test_a_family_is_never_empty() -> None:
    assert family_size([]) == 1
    assert family_size([with_checks("backdoor", ("utility_preserved", "budget_respected"))], budgets=4) == 1


def test_each_attack_has_its_exact_null_tests() -> None:
    def exact(kind: str, clean_models: int = 0) -> set[str]:
        return {c for c in CHECK_NAMES if has_exact_null(c, recipe(kind, clean_models=clean_models))}

    assert exact("gaussian") == {"gaussian_leakage", "relearning_resistant"}
    assert exact("backdoor") == {"gaussian_leakage"}  # by name only: a backdoor recipe cannot list it
    assert exact("backdoor", 8) == {"gaussian_leakage", "relearning_resistant"}
    assert exact("witches_brew") == {"gaussian_leakage", "targeted_removed"}
