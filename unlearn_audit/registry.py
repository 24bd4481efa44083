"""One lookup for everything the suite finds by name: built in, or registered by another package.

Unlearners (`--unlearner`), attacks (a recipe's `[attack] kind`), profiles (`--audit-profile`), data
sources (`[data] source`), architectures (`[model] architecture`) and the checks are all found the
same way, so they share one type, `Registry[T]`, rather than one hand-written lookup each:

- **built-ins by name**, given lazily as `"module:attr"` strings: building a registry imports
  nothing, so the torch-free parts of the suite (the pytest plugin, the report tools) can hold one,
  and a built-in whose module needs torch or an optional extra is imported only when it is used;
- **entry points** of the registry's group (`importlib.metadata.entry_points(group=...)`), read
  on every lookup (a package installed during the session is seen; nothing is cached here);
  a registered name never replaces a built-in one, so installing a package cannot silently change
  what a recipe that names a built-in means;
- optionally a **`"module:attr"` spec** in place of a name (`--unlearner mypkg.method:Method`);
- the resolved object is checked with the caller's **predicate**, so that a wrong registration is
  one clear error at lookup, not an AttributeError deep inside an audit;
- errors are `RegistryError`s (ValueErrors) that say what was wrong and, for an unknown name,
  every known one.

Modelled on lm-evaluation-harness's registry (lazy placeholders, entry-point discovery, type
checks), with only the standard library's public API.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(ValueError):
    """A name or spec that does not resolve; the message says why."""


class UnknownName(RegistryError):
    """A name that is neither built in nor registered. `known` lists every name that is."""

    def __init__(self, message: str, name: str, known: list[str]) -> None:
        super().__init__(message)
        self.name = name
        self.known = known


def _accept_anything(obj: Any) -> bool:
    return True


def _unchanged(obj: Any) -> Any:
    return obj


def _import_hint(module_name: str, exc: Exception) -> str:
    """What to try when the module itself (not something it imports) was not found."""
    if "/" in module_name or module_name.endswith(".py"):
        return " (a spec names a module by its import path, package.module, not by a file path)"
    if isinstance(exc, ModuleNotFoundError) and exc.name == module_name.split(".")[0]:
        return (
            " (install its package, e.g. `pip install -e .` in its project, or run `python -m pytest` from the "
            "folder that holds it: plain `pytest` does not put the current folder on the import path)"
        )
    return ""


def load_spec(spec: str, what: str = "spec") -> Any:
    """The object a `"module:attr"` spec names (`attr` may be dotted: `module:Class.attribute`).

    Every failure is a RegistryError naming the spec and the cause (an import error inside the
    module is the spec's problem, whatever its type), so callers can report it in one line.
    """
    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise RegistryError(f"{what} {spec!r}: module or attribute missing")
    try:
        obj: Any = import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import-time failure is the spec's problem
        raise RegistryError(
            f"{what} {spec!r}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
            + _import_hint(module_name, exc)
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RegistryError(f"{what} {spec!r}: module {module_name!r} has no attribute {attr_path!r}") from None
    return obj


@dataclass(frozen=True)
class Registry(Generic[T]):
    """Names (built in, then registered as entry points of `group`) and, if `specs`, `"module:attr"` specs,
    resolved to objects that `accepts`; `convert` turns an accepted object into the `T` callers get.

    `builtins` maps a name to a `"module:attr"` string (imported on first use) or to the object itself
    (for `T`s that are not strings). A registry is immutable: what can be found is fixed by the code and by
    the installed packages, not by import order.
    """

    what: str
    """What a name names, as messages say it: "attack kind", "data source", "--unlearner"."""
    group: str | None = None
    """The entry-point group other packages register in; None: built-ins only."""
    builtins: Mapping[str, Any] = field(default_factory=dict)
    accepts: Callable[[Any], bool] = _accept_anything
    expected: str = "what was expected"
    """What `accepts` accepts, for the error when it refuses ("an unlearn_audit Attack subclass")."""
    convert: Callable[[Any], T] = _unchanged
    specs: bool = False
    """Whether a `"module:attr"` spec may stand in for a name (a string with ':' is then a spec)."""

    # -- what can be found --------------------------------------------------------------------
    def registered(self) -> dict[str, EntryPoint]:
        """The entry points of the group by name, built-in names left out (they cannot be replaced)."""
        if self.group is None:
            return {}
        found: dict[str, EntryPoint] = {}
        for ep in entry_points(group=self.group):
            if ep.name not in self.builtins:
                found.setdefault(ep.name, ep)  # the first of two distributions registering one name
        return found

    def names(self) -> list[str]:
        """Every name a lookup accepts: built in and registered, sorted."""
        return sorted({*self.builtins, *self.registered()})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.builtins or name in self.registered())

    def target(self, name: str) -> str | None:
        """What `name` stands for without importing it: its `"module:attr"` (a built-in's string or an entry
        point's value), the spec itself for a spec, None for an unknown name or a built-in given as an object."""
        if self.specs and ":" in name:
            return name
        if name in self.builtins:
            value = self.builtins[name]
            return value if isinstance(value, str) else None
        ep = self.registered().get(name)
        return ep.value if ep is not None else None

    # -- lookups ------------------------------------------------------------------------------
    def unknown(self, name: str) -> UnknownName:
        """The error for a name that is not known, listing the known ones (for callers that phrase their own)."""
        known = self.names()
        where = f" (other packages add more through the entry-point group {self.group!r})" if self.group else ""
        return UnknownName(f"unknown {self.what} {name!r}; known: {', '.join(known) or 'none'}{where}", name, known)

    def load(self, name: str) -> Any:
        """The object `name` (or a spec) refers to, imported but neither checked nor converted."""
        if self.specs and ":" in name:
            return load_spec(name, self.what)
        if name in self.builtins:
            value = self.builtins[name]
            return load_spec(value, f"built-in {self.what} {name!r} =") if isinstance(value, str) else value
        ep = self.registered().get(name)
        if ep is None:
            raise self.unknown(name)
        try:
            return ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in is reported, not propagated as is
            raise RegistryError(
                f"{self.what} {name!r}: entry point {ep.value!r} failed to load: {type(exc).__name__}: {exc}"
            ) from exc

    def get(self, name: str) -> T:
        """The `T` for a name (built in, then registered) or, where allowed, a `"module:attr"` spec."""
        obj = self.load(name)
        if not self.accepts(obj):
            raise RegistryError(f"{self.what} {name!r} is registered as {obj!r}, which is not {self.expected}")
        return self.convert(obj)
