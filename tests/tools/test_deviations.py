"""The deviations table is generated from the recipes, and the docs render it at build time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from unlearn_audit.scenarios.recipes import DEVIATION_FIELDS, load_profile_recipes, parse_recipe
from unlearn_audit.tools.deviations import DOCUMENTED_PROFILES, deviation_rows, markdown
from unlearn_audit.tools.deviations import main as deviations_main

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "explanation" / "deviations.md"


def _docs_hook():  # docs/_hooks/ is not a package: load the MkDocs hook from its file
    spec = importlib.util.spec_from_file_location("docs_hook_generate", REPO / "docs" / "_hooks" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_page_renders_the_table_from_the_recipes() -> None:
    page = PAGE.read_text()
    assert "<!-- deviations-table -->" in page, "the deviations page lost its placeholder"
    rendered = _docs_hook().render(page)
    assert "<!-- deviations-table -->" not in rendered
    assert markdown(deviation_rows()).strip() in rendered


def test_the_table_has_a_row_per_deviation_of_every_documented_profile() -> None:
    rows = deviation_rows()
    table = markdown(rows)
    lines = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| profile |")]
    assert len(lines) == len(rows)
    assert {r["profile"] for r in rows} == set(DOCUMENTED_PROFILES)
    for profile in DOCUMENTED_PROFILES:
        assert any(line.startswith(f"| {profile} | ") for line in lines), profile
    assert any("| tiny | gradient_canceling, gradient_canceling_low | victim training |" in line for line in lines)


def test_the_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert deviations_main(None) == 0
    assert capsys.readouterr().out == markdown(deviation_rows())


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
    recipe = (REPO / "fixtures" / "tiny" / "gaussian.toml").read_text()
    with pytest.raises(ValueError, match=r"\[\[deviations\]\] entry needs exactly"):
        parse_recipe("tiny", recipe + '\n[[deviations]]\ntopic = "x"\n', "gaussian.toml")
