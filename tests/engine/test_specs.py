"""Unit tests for `--unlearner` spec resolution (`unlearn_audit.engine.specs`)."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import unlearn_audit.engine.specs as specs
import unlearn_audit.registry as registry
from unlearn_audit.engine.specs import (
    ENTRY_POINT_GROUP,
    FunctionUnlearner,
    SpecError,
    check_spec,
    registered_names,
    resolve_unlearner,
)

MOD = "ua_spec_targets"
BROKEN = "ua_spec_broken"
HELP = "package.module:Attr"

TARGETS = textwrap.dedent(
    '''
    CALLS = []


    class Good:
        """A class with unlearn, instantiable without arguments."""

        def unlearn(self, model, request):
            CALLS.append(("Good", model, request))
            return model


    class NeedsArg:
        def __init__(self, strength):
            self.strength = strength

        def unlearn(self, model, request):
            return model


    class NoUnlearn:
        pass


    class WithDefaults:
        def __init__(self, strength=1.0):
            self.strength = strength

        def unlearn(self, model, request):
            return model


    good_instance = Good()


    def make_good():
        return Good()


    def make_nothing():
        return 42


    def unlearn_fn(model, request):
        CALLS.append(("unlearn_fn", model, request))
        return ("unlearned", model)


    def unlearn_fn_with_option(model, request, steps=3):
        return model


    def three_args(model, request, extra):
        return model


    def one_arg(model):
        return model


    class Holder:
        inner = Good()


    ANSWER = 42
    '''
)


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Two importable modules in a temporary directory on sys.path; forgotten afterwards."""
    (tmp_path / f"{MOD}.py").write_text(TARGETS)
    (tmp_path / f"{BROKEN}.py").write_text('raise ImportError("optional dependency frobnicate is not installed")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in (MOD, BROKEN):
        sys.modules.pop(name, None)
    yield tmp_path
    for name in (MOD, BROKEN):
        sys.modules.pop(name, None)


def fake_entry_points(*eps: EntryPoint):
    def entry_points(*, group: str | None = None, **_: object) -> list[EntryPoint]:
        return [ep for ep in eps if group is None or ep.group == group]

    return entry_points


# --------------------------------------------------------------------------- the four kinds


@pytest.mark.parametrize(
    ("attr", "kind"),
    [
        ("Good", "class"),
        ("WithDefaults", "class"),
        ("good_instance", "instance"),
        ("Holder.inner", "instance"),
        ("make_good", "factory"),
        ("make_nothing", "factory"),  # only resolve_unlearner calls the factory
        ("unlearn_fn", "function"),
        ("unlearn_fn_with_option", "function"),
    ],
)
def test_check_spec_kind(modules: Path, attr: str, kind: str) -> None:
    assert check_spec(f"{MOD}:{attr}") == kind


def test_check_spec_strips_whitespace(modules: Path) -> None:
    assert check_spec(f"  {MOD}:Good\n") == "class"


def test_resolve_class_instantiates(modules: Path) -> None:
    a = resolve_unlearner(f"{MOD}:Good")
    b = resolve_unlearner(f"{MOD}:Good")
    mod = sys.modules[MOD]
    assert isinstance(a, mod.Good) and isinstance(b, mod.Good)
    assert a is not b, "a class spec gives a fresh instance each time"
    model = object()
    assert a.unlearn(model, "request") is model
    assert mod.CALLS[-1] == ("Good", model, "request")


def test_resolve_class_with_default_arguments(modules: Path) -> None:
    u = resolve_unlearner(f"{MOD}:WithDefaults")
    assert u.strength == 1.0


def test_resolve_instance_is_the_object_itself(modules: Path) -> None:
    u = resolve_unlearner(f"{MOD}:good_instance")
    assert u is sys.modules[MOD].good_instance
    assert resolve_unlearner(f"{MOD}:Holder.inner") is sys.modules[MOD].Holder.inner


def test_resolve_factory_calls_it(modules: Path) -> None:
    u = resolve_unlearner(f"{MOD}:make_good")
    mod = sys.modules[MOD]
    assert isinstance(u, mod.Good)
    assert u is not mod.good_instance
    assert u.unlearn("m", "r") == "m"


def test_resolve_function_is_wrapped(modules: Path) -> None:
    u = resolve_unlearner(f"{MOD}:unlearn_fn")
    mod = sys.modules[MOD]
    assert isinstance(u, FunctionUnlearner)
    assert u.function is mod.unlearn_fn
    model, request = object(), object()
    assert u.unlearn(model, request) == ("unlearned", model)
    assert mod.CALLS[-1] == ("unlearn_fn", model, request)


def test_function_unlearner_passes_through() -> None:
    seen = []

    def fn(model, request):
        seen.append((model, request))
        return "result"

    assert FunctionUnlearner(fn).unlearn(1, 2) == "result"
    assert seen == [(1, 2)]


# --------------------------------------------------------------------------- bad specs


def raises_spec_error(spec: str, *fragments: str, resolve: bool = False) -> str:
    with pytest.raises(SpecError) as info:
        (resolve_unlearner if resolve else check_spec)(spec)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_spec_error_is_a_value_error() -> None:
    assert issubclass(SpecError, ValueError)


def test_class_needing_arguments(modules: Path) -> None:
    raises_spec_error(f"{MOD}:NeedsArg", "NeedsArg", "without arguments")
    raises_spec_error(f"{MOD}:NeedsArg", "without arguments", resolve=True)


def test_class_without_unlearn(modules: Path) -> None:
    raises_spec_error(f"{MOD}:NoUnlearn", "NoUnlearn", "unlearn")


def test_callable_with_wrong_arity(modules: Path) -> None:
    raises_spec_error(f"{MOD}:three_args", "3 required arguments")
    raises_spec_error(f"{MOD}:one_arg", "1 required arguments")


def test_plain_attribute_is_not_an_unlearner(modules: Path) -> None:
    raises_spec_error(f"{MOD}:ANSWER", "int", "not an unlearner", HELP)


def test_missing_attribute(modules: Path) -> None:
    raises_spec_error(f"{MOD}:Missing", MOD, "'Missing'", "no attribute", HELP)
    raises_spec_error(f"{MOD}:Holder.missing", "no attribute", "Holder.missing", HELP)


def test_module_raising_import_error(modules: Path) -> None:
    raises_spec_error(f"{BROKEN}:Good", BROKEN, "cannot import", "ImportError", "frobnicate")
    assert BROKEN not in sys.modules


def test_module_that_does_not_exist(modules: Path) -> None:
    raises_spec_error("ua_no_such_module_xyz:Thing", "ua_no_such_module_xyz", "cannot import", "ModuleNotFoundError")


def test_factory_returning_a_non_unlearner(modules: Path) -> None:
    raises_spec_error(f"{MOD}:make_nothing", "factory returned int", resolve=True)


@pytest.mark.parametrize("spec", [f"{MOD}:", ":Good", ":"])
def test_module_or_attribute_missing(modules: Path, spec: str) -> None:
    raises_spec_error(spec, "missing", HELP)


@pytest.mark.parametrize("spec", ["", "   ", "\n"])
def test_empty_spec(spec: str) -> None:
    raises_spec_error(spec, "empty", HELP)
    raises_spec_error(spec, "empty", resolve=True)


def test_unknown_entry_point_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "entry_points", fake_entry_points())
    msg = raises_spec_error("no_such_entry_point", "no_such_entry_point", ENTRY_POINT_GROUP, "registered: none", HELP)
    assert ENTRY_POINT_GROUP == "unlearn_audit.unlearners"
    assert "unlearn_audit.unlearners" in msg


def test_unknown_entry_point_name_with_the_real_registry() -> None:
    raises_spec_error("no_such_entry_point", "no_such_entry_point", "unlearn_audit.unlearners", HELP)


@pytest.mark.parametrize(
    ("spec", "resolve"),
    [
        ("", False),
        (f"{MOD}:NeedsArg", False),
        (f"{MOD}:NoUnlearn", False),
        (f"{MOD}:three_args", False),
        (f"{MOD}:ANSWER", False),
        (f"{MOD}:Missing", False),
        (f"{BROKEN}:Good", False),
        (f"{MOD}:", False),
        ("no_such_entry_point", False),
        (f"{MOD}:make_nothing", True),
    ],
)
def test_every_spec_error_carries_the_help_text(modules: Path, spec: str, resolve: bool) -> None:
    """Whatever went wrong, the one-line usage error also says what a valid spec looks like."""
    msg = raises_spec_error(spec, HELP, ENTRY_POINT_GROUP, resolve=resolve)
    assert msg.count(HELP) == 1, "the help text is appended once, not repeated"


def test_spec_error_appends_help_only_when_missing() -> None:
    assert str(SpecError("boom")) == f"boom; {specs.SPEC_HELP}"
    assert str(SpecError(f"boom; {specs.SPEC_HELP}")) == f"boom; {specs.SPEC_HELP}"


# --------------------------------------------------------------------------- entry points


def test_entry_point_resolves(modules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    eps = [
        EntryPoint(name="mine", value=f"{MOD}:Good", group=ENTRY_POINT_GROUP),
        EntryPoint(name="fn", value=f"{MOD}:unlearn_fn", group=ENTRY_POINT_GROUP),
        EntryPoint(name="other_group", value=f"{MOD}:Good", group="somebody.else"),
    ]
    monkeypatch.setattr(registry, "entry_points", fake_entry_points(*eps))
    assert registered_names() == ["fn", "mine"]
    assert check_spec("mine") == "class"
    u = resolve_unlearner("mine")
    assert isinstance(u, sys.modules[MOD].Good)
    assert u.unlearn("m", "r") == "m"
    assert isinstance(resolve_unlearner(" fn "), FunctionUnlearner)
    # A name registered in another group is not an unlearner.
    raises_spec_error("other_group", "no entry point", "registered: fn, mine")


def test_entry_point_that_fails_to_load(modules: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    eps = [
        EntryPoint(name="broken", value=f"{BROKEN}:Good", group=ENTRY_POINT_GROUP),
        EntryPoint(name="typo", value=f"{MOD}:Goood", group=ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(registry, "entry_points", fake_entry_points(*eps))
    raises_spec_error("broken", "'broken'", "failed to load", "ImportError", f"{BROKEN}:Good", HELP)
    raises_spec_error("typo", "failed to load", "AttributeError", HELP)
