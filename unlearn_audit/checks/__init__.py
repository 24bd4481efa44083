"""The checks: each one is a module `unlearn_audit.checks.X` that declares itself and is judged by
`conformance/test_X.py`.

A check module declares `CHECK = CheckInfo(name="X", kind=..., metric=..., unit=...)` (see
`checks.base.CheckInfo`) and defines `run(ctx) -> CheckResult`. Everything else follows from the
declarations: `CHECK_NAMES`, `REMOVAL_CHECKS`, `check_info(name)` and the lookup of `run`. Nothing
lists the checks by hand, so a new check is one module (and its conformance test, which
tests/checks/test_registry.py requires).

The declarations are read from the modules' source with `ast` rather than by importing them: the
check modules import torch, and the report tools (pooling, assembling, calibrating) and the plugin
must know the checks without it. A check's `run` is imported when it is first looked up.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable
from importlib import resources

from unlearn_audit.checks.base import CheckContext, CheckInfo, CheckResult
from unlearn_audit.registry import Registry, UnknownName


def _declaration(source: str, module: str) -> CheckInfo | None:
    """The module's top-level `CHECK = CheckInfo(...)`, built from its literal arguments; None if it has none."""
    call: ast.expr | None
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["CHECK"]:
            call = node.value
        elif isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == "CHECK":
            call = node.value
        else:
            continue
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == CheckInfo.__name__):
            raise TypeError(f"{module}: CHECK must be assigned CheckInfo(...) directly")
        try:
            args = [ast.literal_eval(a) for a in call.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg is not None}
        except ValueError:
            raise TypeError(
                f"{module}: the arguments of CHECK = CheckInfo(...) must be literals "
                "(they are read without importing the module)"
            ) from None
        return CheckInfo(*args, **kwargs)
    return None


def _declared() -> dict[str, tuple[str, CheckInfo]]:
    """Every check module's declaration by check name, with the module that declares it."""
    found: dict[str, tuple[str, CheckInfo]] = {}
    for entry in sorted(resources.files(__name__).iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".py") and not entry.name.startswith("_"):
            module = f"{__name__}.{entry.name[:-3]}"
            info = _declaration(entry.read_text(encoding="utf-8"), module)
            if info is not None:
                if info.name in found:
                    raise TypeError(f"check {info.name!r} is declared by both {found[info.name][0]} and {module}")
                found[info.name] = (module, info)
    return found


_DECLARED = _declared()

CHECK_INFO: dict[str, CheckInfo] = {name: info for name, (_, info) in _DECLARED.items()}
"""Every check's declaration, by name."""

CHECK_NAMES: tuple[str, ...] = tuple(CHECK_INFO)
"""Every check, by name (sorted)."""

REMOVAL_CHECKS: tuple[str, ...] = tuple(name for name, info in CHECK_INFO.items() if info.kind == "removal")
"""The checks that judge whether the poison is gone (the others judge utility and compute)."""

CHECKS: Registry[Callable[[CheckContext], CheckResult]] = Registry(
    "check",
    None,
    {name: f"{module}:run" for name, (module, _) in _DECLARED.items()},
    accepts=callable,
    expected="a function run(ctx) -> CheckResult",
)
"""Each check's `run`, imported on first use. Built in only: a check also needs a test in the conformance suite."""


def check_info(name: str) -> CheckInfo:
    """Check `name`'s declaration (a KeyError naming the known checks if there is none)."""
    if name not in CHECK_INFO:
        raise KeyError(str(CHECKS.unknown(name)))
    return CHECK_INFO[name]


def get_check(name: str) -> Callable[[CheckContext], CheckResult]:
    """Check `name`'s `run`, evaluating under the numerics of the fixture's training recipe (bf16 on a GPU
    profile's CUDA device, fp32 on the CPU: `training.numerics`)."""
    try:
        run = CHECKS.get(name)
    except UnknownName as exc:
        raise KeyError(str(exc)) from None

    @functools.wraps(run)
    def run_in_fixture_numerics(ctx: CheckContext) -> CheckResult:
        from unlearn_audit.training.numerics import evaluating_fixture_of

        with evaluating_fixture_of(ctx.fixture.recipe.training):
            return run(ctx)

    return run_in_fixture_numerics


__all__ = [
    "CHECK_INFO",
    "CHECK_NAMES",
    "REMOVAL_CHECKS",
    "CheckContext",
    "CheckInfo",
    "CheckResult",
    "check_info",
    "get_check",
]
