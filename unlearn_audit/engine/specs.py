"""Resolve `--unlearner` specs: `package.module:Attr` or a name registered as an entry point.

`Attr` may be a class (instantiated without arguments), an instance with `unlearn`, a factory
returning such an instance, or a plain function `(model, request) -> model`. Specs stay
strings until an audit runs; `check_spec` validates one cheaply at startup so that a typo is
a one-line usage error, not a traceback wall in every test.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from unlearn_audit.registry import Registry, RegistryError, UnknownName

ENTRY_POINT_GROUP = "unlearn_audit.unlearners"
SPEC_HELP = (
    "a valid spec is 'package.module:Attr' (a class, instance, factory or function "
    f"(model, request) -> model) or a name registered in the entry-point group '{ENTRY_POINT_GROUP}'"
)


class SpecError(ValueError):
    """A spec that does not import or resolve; the message says what was wrong and what a valid spec looks like."""

    def __init__(self, message: str) -> None:
        if "package.module:Attr" not in message:
            message = f"{message}; {SPEC_HELP}"
        super().__init__(message)


@dataclass(frozen=True)
class FunctionUnlearner:
    """Adapts a plain function `(model, request) -> model` to the protocol."""

    function: Callable[..., Any]

    def unlearn(self, model: Any, request: Any) -> Any:
        return self.function(model, request)


UNLEARNERS: Registry[Any] = Registry("--unlearner", ENTRY_POINT_GROUP, specs=True)
"""Names registered in the group, or `package.module:Attr` specs; what the target is, `check_spec` decides."""


def registered_names() -> list[str]:
    return UNLEARNERS.names()


def _load_target(spec: str) -> Any:
    spec = spec.strip()
    if not spec:
        raise SpecError(f"empty --unlearner spec; {SPEC_HELP}")
    try:
        return UNLEARNERS.get(spec)
    except UnknownName as exc:
        known = ", ".join(exc.known) or "none"
        raise SpecError(
            f"--unlearner {spec!r}: no ':' and no entry point of that name (registered: {known}); {SPEC_HELP}"
        ) from None
    except RegistryError as exc:
        raise SpecError(str(exc)) from exc


def _required_positional(fn: Callable[..., Any]) -> int | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    return sum(
        1
        for p in sig.parameters.values()
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    )


def check_spec(spec: str) -> str:
    """Validate without instantiating; returns a short description of what the spec names."""
    target = _load_target(spec)
    if inspect.isclass(target):
        if not callable(getattr(target, "unlearn", None)):
            raise SpecError(f"--unlearner {spec!r}: class {target.__name__} has no unlearn(model, request) method")
        if _required_positional(target) not in (0, None):
            raise SpecError(
                f"--unlearner {spec!r}: class {target.__name__} cannot be instantiated without arguments; "
                "expose an instance or a factory instead"
            )
        return "class"
    if callable(getattr(target, "unlearn", None)):
        return "instance"
    if callable(target):
        n = _required_positional(target)
        if n == 2:
            return "function"
        if n == 0:
            return "factory"
        raise SpecError(
            f"--unlearner {spec!r}: callable takes {n} required arguments; expected a factory with none "
            "or a function (model, request) -> model"
        )
    raise SpecError(f"--unlearner {spec!r}: {type(target).__name__} object is not an unlearner; {SPEC_HELP}")


def resolve_unlearner(spec: str) -> Any:
    """An object with `unlearn(model, request)` for the spec (instantiating classes and factories)."""
    kind = check_spec(spec)
    target = _load_target(spec)
    if kind == "class":
        return target()
    if kind == "instance":
        return target
    if kind == "function":
        return FunctionUnlearner(target)
    made = target()
    if not callable(getattr(made, "unlearn", None)):
        raise SpecError(
            f"--unlearner {spec!r}: factory returned {type(made).__name__}, which has no unlearn(model, request)"
        )
    return made


REFERENCE_RETRAIN = ("unlearn_audit.methods:Retrain", "unlearn_audit.methods.basic:Retrain")


def names_reference_retrain(spec: str) -> bool:
    """Whether the spec names the harness's own `Retrain` (exempt from the budget), told without importing it.

    A subclass or a look-alike elsewhere is not the reference and is held to the budget.
    """
    spec = spec.strip()
    return (UNLEARNERS.target(spec) or spec).replace(" ", "") in REFERENCE_RETRAIN
