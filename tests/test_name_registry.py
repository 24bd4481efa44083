"""The one lookup by name (`unlearn_audit.registry.Registry`) behind unlearners, attacks, profiles, data
sources, architectures and checks: lazy built-ins, entry points, specs, the caller's type check, errors."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

import unlearn_audit.registry as registry
from unlearn_audit.registry import Registry, RegistryError, UnknownName, load_spec

GROUP = "unlearn_audit.test_things"


def fake_entry_points(*eps: EntryPoint):
    def entry_points(*, group: str | None = None, **_: object) -> list[EntryPoint]:
        return [ep for ep in eps if group is None or ep.group == group]

    return entry_points


@pytest.fixture
def plugged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two installed packages register `json_loads` (a function), `not_callable` and one that fails to load,
    and try to replace the built-in `dumps`."""
    monkeypatch.setattr(
        registry,
        "entry_points",
        fake_entry_points(
            EntryPoint("json_loads", "json:loads", GROUP),
            EntryPoint("not_callable", "json:__name__", GROUP),
            EntryPoint("broken", "ua_no_such_module_xyz:thing", GROUP),
            EntryPoint("dumps", "json:loads", GROUP),
            EntryPoint("elsewhere", "json:loads", "somebody.else"),
        ),
    )


THINGS = Registry(
    "thing",
    GROUP,
    {"dumps": "json:dumps", "nothing": "ua_no_such_module_xyz:thing"},
    accepts=callable,
    expected="a callable",
)


def test_names_are_the_builtins_and_the_groups_entry_points(plugged: None) -> None:
    assert THINGS.names() == ["broken", "dumps", "json_loads", "not_callable", "nothing"]
    assert "json_loads" in THINGS and "elsewhere" not in THINGS


def test_builtins_are_imported_only_when_used() -> None:
    code = (
        "import sys; from unlearn_audit.registry import Registry; "
        "r = Registry('thing', None, {'x': 'ua_lazy_never_imported:thing'}); "
        "assert r.names() == ['x'] and r.target('x') == 'ua_lazy_never_imported:thing'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
    with pytest.raises(RegistryError, match="built-in thing 'nothing' = 'ua_no_such_module_xyz:thing': cannot import"):
        THINGS.get("nothing")


def test_a_registered_name_cannot_replace_a_builtin(plugged: None) -> None:
    import json

    assert THINGS.get("dumps") is json.dumps and THINGS.get("json_loads") is json.loads
    assert THINGS.target("dumps") == "json:dumps" and THINGS.target("json_loads") == "json:loads"


def test_an_unknown_name_lists_the_known_ones(plugged: None) -> None:
    with pytest.raises(UnknownName) as info:
        THINGS.get("nope")
    assert info.value.known == THINGS.names() and info.value.name == "nope"
    assert str(info.value) == (
        f"unknown thing 'nope'; known: broken, dumps, json_loads, not_callable, nothing "
        f"(other packages add more through the entry-point group {GROUP!r})"
    )
    assert isinstance(info.value, ValueError)
    assert str(Registry("check").unknown("x")) == "unknown check 'x'; known: none"


def test_the_callers_predicate_and_broken_entry_points_are_one_line_errors(plugged: None) -> None:
    with pytest.raises(RegistryError, match="thing 'not_callable' is registered as 'json', which is not a callable"):
        THINGS.get("not_callable")
    with pytest.raises(
        RegistryError,
        match="thing 'broken': entry point 'ua_no_such_module_xyz:thing' failed to load: ModuleNotFoundError",
    ):
        THINGS.get("broken")


def test_specs_only_where_the_registry_allows_them() -> None:
    import os.path

    assert Registry("unlearner", specs=True).get("os.path:join") is os.path.join
    assert Registry("unlearner", specs=True).get("os:path.join") is os.path.join  # a dotted attribute
    with pytest.raises(UnknownName):
        Registry("thing").get("os.path:join")


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("os:", "module or attribute missing"),
        (":join", "module or attribute missing"),
        ("ua_no_such_module_xyz:x", "cannot import module 'ua_no_such_module_xyz': ModuleNotFoundError"),
        ("os.path:nope", "module 'os.path' has no attribute 'nope'"),
    ],
)
def test_bad_specs(spec: str, why: str) -> None:
    with pytest.raises(RegistryError, match=f"^spec '{spec}': {why}"):
        load_spec(spec)


@pytest.mark.parametrize(
    ("spec", "hint"),
    [
        ("ua_no_such_pkg_xyz.method:M", "run `python -m pytest` from the folder that holds it"),
        ("ua_no_such_pkg_xyz/method.py:M", "not by a file path"),
        ("os.no_such_submodule_xyz:M", None),  # the package is there: no hint about installing it
    ],
)
def test_a_module_that_is_not_found_comes_with_what_to_try(spec: str, hint: str | None) -> None:
    with pytest.raises(RegistryError) as caught:
        load_spec(spec, "--unlearner")
    message = str(caught.value)
    assert (hint in message) if hint else ("pip install" not in message and "file path" not in message)


def test_the_suites_registries_import_no_torch() -> None:
    code = (
        "import sys; import unlearn_audit.attacks.registry, unlearn_audit.profiles.registry, "
        "unlearn_audit.engine.specs, unlearn_audit.checks; from unlearn_audit.profiles.registry import profile_roots; "
        "assert 'tiny' in profile_roots(); assert 'torch' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_the_builtin_data_sources_and_architectures_resolve() -> None:
    from unlearn_audit.profiles.registry import ARCHITECTURES, BUILTIN_ARCHITECTURES, BUILTIN_DATASETS, DATASETS

    for name in BUILTIN_DATASETS:
        assert callable(DATASETS.get(name)), name
    for name in BUILTIN_ARCHITECTURES:
        assert callable(ARCHITECTURES.get(name)), name
    with pytest.raises(ValueError, match="unknown architecture 'nope'; known: gpt2_pretrained, gpt2_small, mlp, "):
        ARCHITECTURES.get("nope")
