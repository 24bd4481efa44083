"""The README's deviations table is generated from the recipes and must stay equal to them."""

from __future__ import annotations

from pathlib import Path

import pytest

from unlearn_audit.scenarios.recipes import DEVIATION_FIELDS, load_profile_recipes, parse_recipe
from unlearn_audit.tools.deviations import DOCUMENTED_PROFILES, deviation_rows, markdown, readme_block

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_table_matches_the_recipes() -> None:
    assert readme_block(README.read_text()) == markdown(deviation_rows()), (
        "README's deviations table is stale: replace it with the output of `unlearn-audit deviations`")


def test_every_scenario_of_the_documented_profiles_states_its_deviations() -> None:
    for profile in DOCUMENTED_PROFILES:
        for name, recipe in load_profile_recipes(profile).items():
            assert recipe.deviations, f"{profile}/{name} lists no [[deviations]]"
            assert all(set(d) == set(DEVIATION_FIELDS) and all(d.values()) for d in recipe.deviations)


def test_the_recipes_own_settings_appear_in_their_deviations() -> None:
    """Spot checks that the table says what the recipes do (not what they once did)."""
    tiny = load_profile_recipes("tiny")
    assert tiny["gradient_canceling"].training.lr == 0.02
    assert any("lr 0.02" in d["here"] for d in tiny["gradient_canceling"].deviations)
    assert tiny["witches_brew"].attack["epsilon"] == 32
    assert any("epsilon 32/255" in d["here"] for d in tiny["witches_brew"].deviations)
    text = load_profile_recipes("text")["trigger_word"]
    assert any(d["here"] == f"{text.options('not_mode_connected')['points']} points" for d in text.deviations)


def test_a_malformed_deviation_is_a_recipe_error() -> None:
    recipe = (README.parent / "fixtures" / "tiny" / "gaussian.toml").read_text()
    with pytest.raises(ValueError, match=r"\[\[deviations\]\] entry needs exactly"):
        parse_recipe("tiny", recipe + '\n[[deviations]]\ntopic = "x"\n', "gaussian.toml")
