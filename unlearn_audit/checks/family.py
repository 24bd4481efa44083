"""The suite's family of tests with exact nulls, and the Bonferroni level that bounds their joint error.

A model retrained from scratch without the poisons meets some nulls exactly: its GUS scores are
N(0, 1) (`gaussian_leakage`, and `relearning_resistant` on a Gaussian poison), and it is one more
clean model for the prediction tests against a population of clean models (Witches' Brew's
`targeted_removed`, and `relearning_resistant` on a fixture with `[references] clean_models`; exact
when the population's scores are normal). Each such test fails `Retrain` with
probability alpha, so a run with m of them fails it with probability up to m x alpha. These tests
therefore run at alpha / m, m counted over the run's scenarios and budgets for one unlearner
(not over the tests a `-k` happens to select, so that a verdict does not depend on the selection):
the probability that `Retrain` fails any of them is at most alpha, at any number of seeds, because
seeds are pooled into the same tests. Holm's step-down would be more powerful, but it needs every
p-value of the run before any verdict, and pytest (and xdist) decide tests one at a time.

The other tests compare with a margin (accuracy and attack success within 5 points of retrain's,
a barrier above a quarter of retrain's): a retrained model sits far inside their nulls, so they
fail it with a probability far below alpha; `unlearn-audit calibrate` measures the suite-level rate.
"""

from __future__ import annotations

from collections.abc import Iterable

from unlearn_audit.attacks.registry import get_attack
from unlearn_audit.scenarios.recipes import ScenarioRecipe


def has_exact_null(check: str, recipe: ScenarioRecipe) -> bool:
    """True when a retrained model meets the test's null exactly (it fails it with probability alpha)."""
    attack = get_attack(str(recipe.attack["kind"]))
    if check == "gaussian_leakage":
        return True
    if check == "relearning_resistant":
        # The held-out poisons' GUS is N(0, 1); with clean models, Retrain is one more draw from their population.
        return attack.measures_forget_set or recipe.clean_models > 0
    if check == "targeted_removed":
        return attack.targeted_reference == "clean_models"
    return False


def family_size(recipes: Iterable[ScenarioRecipe], budgets: int = 1) -> int:
    """How many tests with exact nulls one unlearner meets in a run over these scenarios and budgets."""
    tests = sum(has_exact_null(c, r) for r in recipes for c in r.checks)
    return max(1, tests * budgets)
