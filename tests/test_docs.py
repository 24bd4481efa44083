"""The README stays short and its links resolve; the docs' generated parts render from the code.

The documentation's tables are rendered at build time by a MkDocs hook (`docs/_hooks/generate.py`);
these tests run the hook without MkDocs, so they hold in the test environment too. `mkdocs build
--strict` (CI) checks the pages' own links and the navigation.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
MAX_README_LINES = 250


def _hook():  # docs/_hooks/ is not a package: load the MkDocs hook from its file
    spec = importlib.util.spec_from_file_location("docs_hook_generate", DOCS / "_hooks" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HOOK = _hook()
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)


# -- README ----------------------------------------------------------------------------------------


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move material into docs/"


def _relative_links(markdown: str) -> list[str]:
    targets = re.findall(r"\]\(([^)\s]+)\)", markdown)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_every_relative_link_of_the_readme_points_to_a_file() -> None:
    links = _relative_links(README.read_text(encoding="utf-8"))
    assert links, "the README links to no docs page"
    missing = [link for link in links if not (REPO / link.split("#", 1)[0]).is_file()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_readme_links_every_docs_page_it_names_and_the_changelog() -> None:
    links = {link.split("#", 1)[0] for link in _relative_links(README.read_text(encoding="utf-8"))}
    assert "CHANGELOG.md" in links and "docs/index.md" in links
    for folder in ("tutorial", "how-to", "reference", "explanation"):
        assert any(link.startswith(f"docs/{folder}/") for link in links), folder


def test_readme_gives_the_commands_ci_runs() -> None:
    """The install command and the test command of the README are the ones `.ci/run` runs."""
    readme = README.read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    for command in ('pip install torch==2.13.0 -e ".[test]"', "python -m pytest"):
        assert command in readme and command in ci, command
    assert "pytest --unlearner unlearn_audit.methods:GradientDescent" in readme


# -- the navigation --------------------------------------------------------------------------------


def test_the_navigation_lists_every_page() -> None:
    config = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    nav = set(re.findall(r"([\w./-]+\.md)\s*$", config, flags=re.MULTILINE))
    pages = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert pages == nav, (
        f"pages missing from mkdocs.yml's nav: {sorted(pages - nav)}; nav entries without a page: {sorted(nav - pages)}"
    )
    assert "docs/_hooks/generate.py" in config


# -- the generated parts ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HOOK.GENERATORS))
def test_every_generated_part_renders(name: str) -> None:
    text = HOOK.generated(name)
    assert text.strip(), name
    assert not HOOK.PLACEHOLDER.search(text)


def test_every_placeholder_is_used_by_a_page_and_every_page_renders() -> None:
    used: set[str] = set()
    for page in PAGES:
        markdown = page.read_text(encoding="utf-8")
        used |= {m.group(1) for m in HOOK.PLACEHOLDER.finditer(markdown)}
        rendered = HOOK.render(markdown)
        assert not HOOK.PLACEHOLDER.search(rendered), page
        for comment in re.findall(r"^<!-- ([a-z-]+) -->\s*$", rendered, flags=re.MULTILINE):
            pytest.fail(f"{page.relative_to(REPO)}: unknown placeholder <!-- {comment} -->")
    assert used == set(HOOK.GENERATORS), f"placeholders no page uses: {sorted(set(HOOK.GENERATORS) - used)}"


def test_the_hook_is_the_mkdocs_page_hook() -> None:
    page = "# Options\n\n<!-- options-table -->\n"
    assert HOOK.on_page_markdown(page, page=None, config=None, files=None) == HOOK.render(page)
    assert "<!-- options-table -->" not in HOOK.render(page)


def test_the_options_table_has_every_option() -> None:
    from unlearn_audit.plugin.options import OPTIONS

    table = HOOK.generated("options-table")
    for option in OPTIONS:
        assert f"<code>{option.flag}" in table, option.flag
    assert "<code>--audit-sandbox on&#124;off</code>" in table  # a pipe inside a cell does not split it
    # defaults decided after parsing are named, not shown as "—" (which reads as "none")
    row = next(line for line in table.splitlines() if "<code>--audit-budget" in line)
    assert row.split("|")[2].strip() == "0.1"
    row = next(line for line in table.splitlines() if "<code>--audit-threads" in line)
    assert row.split("|")[2].strip() == "1"


def test_the_checks_reference_has_every_registered_check() -> None:
    from unlearn_audit.checks import CHECK_NAMES

    text = HOOK.generated("checks-reference")
    for name in CHECK_NAMES:
        assert f"## `{name}`" in text and f"[`{name}`](#{name})" in text, name
    assert "min_barrier_fraction=0.25" in text  # the recipes' settings


def test_the_protocol_reference_has_every_field() -> None:
    from unlearn_audit import protocol

    text = HOOK.generated("protocol-reference")
    for cls in (protocol.UnlearningRequest, protocol.ExampleSet, protocol.Budget, protocol.TrainingRecipe):
        assert f"## `{cls.__name__}`" in text
        for f in dataclasses.fields(cls):
            assert f"| <code>{f.name}</code> |" in text, (cls.__name__, f.name)
    assert "make_optimizer" in text and "batches" in text
    assert "Held-out clean data" in text  # an attribute docstring


def test_the_report_reference_has_every_record_field() -> None:
    from unlearn_audit.reports.record import SCHEMA_VERSION, ResultRecord

    text = HOOK.generated("report-fields")
    for f in dataclasses.fields(ResultRecord):
        assert f"| <code>{f.name}</code> |" in text, f.name
    assert f"`schema_version` is {SCHEMA_VERSION}" in text
    assert "the seed of a one-seed test" in text  # an end-of-line comment


def test_the_profiles_cli_and_methods_references_are_complete() -> None:
    import unlearn_audit.methods as methods
    from unlearn_audit.scenarios.recipes import load_profile_recipes, profile_names

    profiles = HOOK.generated("profiles-table")
    for profile in profile_names():
        assert f"### `{profile}`" in profiles
        for scenario in load_profile_recipes(profile):
            assert f"| `{scenario}` |" in profiles, (profile, scenario)
    cli = HOOK.generated("cli-reference")
    for command in (
        "fixtures build",
        "fixtures pack",
        "fixtures unpack",
        "calibrate",
        "compare",
        "diff",
        "merge",
        "plot",
        "deviations",
        "data import",
    ):
        assert f"## `unlearn-audit {command}`" in cli, command
    table = HOOK.generated("methods-table")
    for name in methods.__all__:
        assert f"`unlearn_audit.methods:{name}`" in table, name


def test_the_changelog_page_includes_the_changelog() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    dates = re.findall(r"^## (\d{4}-\d{2}-\d{2})", changelog, flags=re.MULTILINE)
    assert dates and dates == sorted(dates, reverse=True), "changelog entries newest first"
    rendered = HOOK.render((DOCS / "changelog.md").read_text(encoding="utf-8"))
    assert f"## {dates[0]}" in rendered
