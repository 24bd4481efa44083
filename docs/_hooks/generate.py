"""MkDocs hook: the documentation's generated parts, rendered from the code at build time.

A page asks for a generated part with a placeholder on a line of its own, e.g. `<!-- options-table -->`;
`on_page_markdown` (MkDocs' documented page hook, declared under `hooks:` in mkdocs.yml) replaces it
with Markdown made from the package: the plugin's option table, the check registry and the checks'
docstrings, the protocol's docstrings, the report record's fields, the recipes (profiles, thresholds,
deviations from the papers), the command line's argparse parser, the reference methods, the committed
GPU benchmark JSON and CHANGELOG.md. Nothing in those parts is copied by hand, so they cannot drift from
the code. `tests/test_docs.py` renders every placeholder.

Run `mkdocs build --strict` from the repository root, in an environment where unlearn-audit is
installed (`pip install -e ".[docs]"`).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import html
import importlib
import importlib.util
import inspect
import io
import os
import re
import tokenize
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


# -- helpers ---------------------------------------------------------------------------------------


def _cell(text: Any) -> str:
    """Plain text for a Markdown table cell: one line, pipes escaped, and `<`, `>`, `&` as entities (a help
    text's `<number of GPUs>` is otherwise an unknown HTML tag, which the browser hides)."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def _code(text: Any) -> str:
    """Inline code for a table cell (HTML, so that a pipe inside it cannot split the cell)."""
    return "<code>" + html.escape(str(text)).replace("|", "&#124;") + "</code>"


def _first_paragraph(doc: str | None) -> str:
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def _comments(source: str) -> dict[int, str]:
    """Line number -> the comment at the end of that line."""
    found: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            found[tok.start[0]] = tok.string.lstrip("#").strip()
    return found


def _field_notes(cls: type) -> dict[str, str]:
    """What the source says about each field of a class: its attribute docstring, else its end-of-line
    comment (read with ast and tokenize from the class's module)."""
    module = inspect.getmodule(cls)
    assert module is not None
    source = inspect.getsource(module)
    comments = _comments(source)
    tree = ast.parse(source)
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    notes: dict[str, str] = {}
    body = node.body
    for i, stmt in enumerate(body):
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            name = stmt.target.id
            following = body[i + 1] if i + 1 < len(body) else None
            if (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                notes[name] = " ".join(following.value.value.split())
            elif stmt.lineno in comments:
                notes[name] = comments[stmt.lineno]
    return notes


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return _code(repr(f.default))
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return _code(repr(f.default_factory()))  # type: ignore[misc]
    return "required"


def _fields_table(cls: type) -> str:
    notes = _field_notes(cls)
    lines = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        annotation = annotation.replace("'", "").replace('"', "")  # forward references, as written
        lines.append(f"| {_code(f.name)} | {_code(annotation)} | {_default(f)} | {_cell(notes.get(f.name, ''))} |")
    return "\n".join(lines)


def _methods(cls: type) -> str:
    out = []
    for name, member in cls.__dict__.items():
        if name.startswith("_") or not callable(member) or not inspect.getdoc(member):
            continue
        signature = str(inspect.signature(member)).replace("'", "").replace('"', "")  # forward references
        out.append(f"- `{name}{signature}`: {_first_paragraph(inspect.getdoc(member))}")
    return "\n".join(out)


@contextlib.contextmanager
def _columns(width: int) -> Iterator[None]:
    """argparse wraps its help to $COLUMNS."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


# -- the generated parts ---------------------------------------------------------------------------


def options_table() -> str:
    """`plugin/options.py`'s OPTIONS: the `--unlearner` / `--audit-*` options as pytest registers them."""
    from unlearn_audit.plugin.options import GROUP, OPTIONS

    lines = [
        f"Every option of the pytest option group `{GROUP}` (`pytest --help` lists them too).",
        "",
        "| option | default | meaning |",
        "|---|---|---|",
    ]
    for option in OPTIONS:
        flag = option.flag + (f" {option.metavar}" if option.metavar else "")
        if option.action == "store_true":
            default = "off"
        elif option.shown_default is not None:
            default = _cell(option.shown_default)
        elif option.default in (None, [], ""):
            default = "—"
        else:
            default = _code(option.default)
        repeat = " Repeatable." if option.action == "append" and "Repeatable" not in option.help else ""
        lines.append(f"| {_code(flag)} | {default} | {_cell(option.help + repeat)} |")
    return "\n".join(lines)


def _check_names() -> tuple[str, ...]:
    """The check registry, read defensively (a name tuple or a mapping, whichever the package has)."""
    checks = importlib.import_module("unlearn_audit.checks")
    names = getattr(checks, "CHECK_NAMES", None)
    if names is None:
        registry = getattr(checks, "CHECKS", None) or getattr(checks, "REGISTRY", None) or {}
        names = tuple(registry)
    return tuple(names)


def _check_declaration(name: str, module: Any) -> Any:
    """The check's declaration object, if the package has one (`check_info(name)`, or a module-level
    `CHECK`); read defensively, since the registry's shape may change."""
    checks = importlib.import_module("unlearn_audit.checks")
    lookup = getattr(checks, "check_info", None)
    if callable(lookup):
        try:
            return lookup(name)
        except Exception:  # noqa: BLE001 - fall back to the module's own attributes
            pass
    return getattr(module, "CHECK", None)


def _check_kind(name: str, module: Any) -> str:
    info = _check_declaration(name, module)
    kind = getattr(info, "kind", None) or getattr(module, "KIND", None) or getattr(module, "kind", None)
    removal = getattr(importlib.import_module("unlearn_audit.checks"), "REMOVAL_CHECKS", ())
    if isinstance(kind, str) and kind and kind != "other":
        return kind
    return "removal" if name in removal else "utility and compute"


def _check_metric(name: str, module: Any) -> str:
    info = _check_declaration(name, module)
    metric = getattr(info, "metric", None) or getattr(module, "METRIC", None) or ""
    unit = getattr(info, "unit", None) or getattr(module, "UNIT", None) or ""
    if metric and unit:
        return f"{metric} ({unit})"
    return str(metric or unit)


def _documented_profiles() -> tuple[str, ...]:
    from unlearn_audit.tools.deviations import DOCUMENTED_PROFILES

    return tuple(DOCUMENTED_PROFILES)


def _options_text(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "—"


def checks_reference() -> str:
    """The checks registered in `unlearn_audit/checks/__init__.py`, each with its module's docstring, the
    scenarios whose recipes list it and the recipes' settings for it."""
    from unlearn_audit.scenarios.recipes import load_profile_recipes

    recipes = {p: load_profile_recipes(p) for p in _documented_profiles()}
    modules = {name: importlib.import_module(f"unlearn_audit.checks.{name}") for name in _check_names()}
    metrics = {name: _check_metric(name, module) for name, module in modules.items()}
    with_metric = any(metrics.values())
    summary = [
        "| check | kind | judged on (profile: scenarios) | question |" + (" score |" if with_metric else ""),
        "|---|---|---|---|" + ("---|" if with_metric else ""),
    ]
    sections = []
    for name, module in modules.items():
        shown = getattr(_check_declaration(name, module), "name", None) or getattr(module, "NAME", name)
        uses = []
        for profile, by_name in recipes.items():
            scenarios = [s for s, r in sorted(by_name.items()) if name in r.checks]
            if scenarios:
                uses.append(f"{profile}: {', '.join(scenarios)}")
        doc = inspect.getdoc(module) or ""
        question = _first_paragraph(doc).split(":", 1)[-1].strip()
        summary.append(
            f"| [`{shown}`](#{shown}) | {_check_kind(name, module)} | {_cell('; '.join(uses) or '—')} "
            f"| {_cell(question)} |" + (f" {_cell(metrics[name] or '—')} |" if with_metric else "")
        )
        body = doc.split("\n\n", 1)[1] if "\n\n" in doc else ""
        settings = ["| profile | scenario | recipe settings |", "|---|---|---|"]
        for profile, by_name in recipes.items():
            for scenario, recipe in sorted(by_name.items()):
                if name in recipe.checks:
                    settings.append(f"| {profile} | {scenario} | {_cell(_options_text(recipe.options(name)))} |")
        sections.append(
            f"## `{shown}` {{#{shown}}}\n\n{_first_paragraph(doc)}\n\n{body}\n\n"
            f"Settings in the recipes (`fixtures/<profile>/<scenario>.toml`, `[checks.{shown}]`):\n\n"
            + "\n".join(settings)
        )
    return "\n".join(summary) + "\n\n" + "\n\n".join(sections)


def protocol_reference() -> str:
    """`unlearn_audit/protocol.py`: the Unlearner protocol and what the harness hands to it."""
    from unlearn_audit import protocol

    parts = [inspect.getdoc(protocol) or ""]
    unlearner = protocol.Unlearner
    parts.append(
        f"## `Unlearner`\n\n{inspect.getdoc(unlearner)}\n\n```python\n"
        f"def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module: ...\n```"
    )
    for cls in (protocol.UnlearningRequest, protocol.ExampleSet, protocol.Budget, protocol.TrainingRecipe):
        section = f"## `{cls.__name__}`\n\n{inspect.getdoc(cls)}\n\n{_fields_table(cls)}"
        methods = _methods(cls)
        if methods:
            section += f"\n\nMethods:\n\n{methods}"
        parts.append(section)
    parts.append(
        f"`DEFAULT_BUDGET_FRACTION = {protocol.DEFAULT_BUDGET_FRACTION!r}`: "
        "the budget unless `--audit-budget` says otherwise."
    )
    return "\n\n".join(parts)


def report_fields() -> str:
    """`unlearn_audit/reports/record.py`: one result of the JSON report (`dataclasses.fields(ResultRecord)`)."""
    from unlearn_audit.reports import record

    schema_doc = " ".join(_field_doc_of_module_constant(record, "SCHEMA_VERSION").split())
    outcomes = ", ".join(f"`{v}` → `{o}`" for v, o in record.OUTCOME_OF_VERDICT.items())
    return "\n\n".join(
        [
            f"`schema_version` is {record.SCHEMA_VERSION}: {schema_doc}",
            f"Each entry of `results` is a `ResultRecord`: {_first_paragraph(inspect.getdoc(record.ResultRecord))}",
            _fields_table(record.ResultRecord),
            f"A result is identified across runs (the baseline gate matches on it) by "
            f"{', '.join(f'`{k}`' for k in record.KEY_FIELDS)}. "
            f"A check's verdict becomes the pytest outcome: {outcomes}.",
            f"The same record travels with each test report as the user properties `{record.CASE_PROPERTY}` (the case, "
            f"set at collection) and `{record.RESULT_PROPERTY}` (the judged result), so `--junitxml` carries it too.",
        ]
    )


def _field_doc_of_module_constant(module: Any, name: str) -> str:
    tree = ast.parse(inspect.getsource(module))
    body = tree.body
    for i, stmt in enumerate(body):
        targets = [t.id for t in getattr(stmt, "targets", []) if isinstance(t, ast.Name)]
        if name in targets and i + 1 < len(body):
            nxt = body[i + 1]
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                return nxt.value.value
    return ""


def profiles_table() -> str:
    """Every profile's scenarios, from their recipes."""
    from unlearn_audit.scenarios.recipes import load_profile_recipes, profile_names

    out = []
    for profile in profile_names():
        recipes = load_profile_recipes(profile)
        first = next(iter(recipes.values()))
        t = first.training
        model = ", ".join(f"{k}={v}" for k, v in first.model.items())
        data = ", ".join(f"{k}={v}" for k, v in first.data.items())
        lines = [
            f"### `{profile}`",
            "",
            f"Data: {_code(data)}. Model: {_code(model)}. Training (first recipe): {t.optimizer}, lr {t.lr:g}, "
            f"batch {t.batch_size}, {t.epochs} epochs, trainer `{t.trainer}`, precision `{t.precision}`.",
            "",
            "| scenario | attack | what is poisoned | checks | clean models |",
            "|---|---|---|---|---|",
        ]
        for name, r in sorted(recipes.items()):
            lines.append(
                f"| `{name}` | `{r.attack.get('kind')}` | {_cell(r.description)} | "
                f"{_cell(', '.join(r.checks))} | {r.clean_models} |"
            )
        out.append("\n".join(lines))
    return "\n\n".join(out)


def cli_reference() -> str:
    """`unlearn-audit`'s argparse parser (`tools/cli.py:build_parser`): every subcommand's help."""
    import argparse

    from unlearn_audit.tools.cli import build_parser

    def leaves(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield parser
            return
        for action in subs:
            for child in dict.fromkeys(action.choices.values()):
                yield from leaves(child)

    with _columns(100):
        root = build_parser()
        parts = [f"```text\n{root.format_help().rstrip()}\n```"]
        for parser in leaves(root):
            parts.append(f"## `{parser.prog}`\n\n```text\n{parser.format_help().rstrip()}\n```")
    return "\n\n".join(parts)


def methods_table() -> str:
    """The reference unlearners exported by `unlearn_audit.methods`, with their docstrings' first paragraph."""
    methods = importlib.import_module("unlearn_audit.methods")
    lines = ["| spec | what it does |", "|---|---|"]
    for name in sorted(getattr(methods, "__all__", ())):
        obj = getattr(methods, name)
        if not inspect.isclass(obj):
            continue
        lines.append(f"| `unlearn_audit.methods:{name}` | {_cell(_first_paragraph(inspect.getdoc(obj)))} |")
    return "\n".join(lines)


def deviations_table() -> str:
    """The recipes' `[[deviations]]` (what `unlearn-audit deviations` prints)."""
    from unlearn_audit.tools.deviations import deviation_rows, markdown

    return markdown(deviation_rows()).rstrip("\n")


def _gpu_table_module() -> Any:
    spec = importlib.util.spec_from_file_location("unlearn_audit_docs_gpu_table", REPO / "benchmarks" / "gpu_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gpu_tables() -> str:
    """benchmarks/gpu_table.py over the committed JSON in benchmarks/results/."""
    return _gpu_table_module().render_table(REPO / "benchmarks" / "results").strip()


def changelog() -> str:
    """CHANGELOG.md at the repository root, without its own title."""
    text = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    return re.sub(r"\A# [^\n]*\n+", "", text).rstrip("\n")


GENERATORS: dict[str, Callable[[], str]] = {
    "options-table": options_table,
    "checks-reference": checks_reference,
    "protocol-reference": protocol_reference,
    "report-fields": report_fields,
    "profiles-table": profiles_table,
    "cli-reference": cli_reference,
    "methods-table": methods_table,
    "deviations-table": deviations_table,
    "gpu-tables": gpu_tables,
    "changelog": changelog,
}
PLACEHOLDER = re.compile(r"^<!-- (" + "|".join(map(re.escape, GENERATORS)) + r") -->[ \t]*$", re.MULTILINE)


@functools.cache
def generated(name: str) -> str:
    """One generated part (computed once per build)."""
    return GENERATORS[name]()


def render(markdown: str) -> str:
    """`markdown` with every placeholder replaced by its generated part."""
    return PLACEHOLDER.sub(lambda m: generated(m.group(1)), markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return render(markdown)
