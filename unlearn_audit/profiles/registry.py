"""Profiles, data sources and architectures that other packages register (torch-free lookups).

A profile is a folder of scenario recipes (`<profile>/*.toml`). The built-in ones ship in
`unlearn_audit.fixtures`; a package adds its own without editing this one, by entry points in
its `pyproject.toml`:

    [project.entry-points."unlearn_audit.profiles"]
    tiny-blended = "mypkg.recipes"            # a package whose folder holds the profile's *.toml

    [project.entry-points."unlearn_audit.datasets"]
    my_data = "mypkg.data:load_split"          # (**recipe [data] options) -> unlearn_audit Split

    [project.entry-points."unlearn_audit.architectures"]
    my_net = "mypkg.models:build"              # (input_shape, num_classes, **[model] options) -> nn.Module

and by `unlearn_audit.attacks` for attacks (see `unlearn_audit.attacks.registry`).
"""

from __future__ import annotations

from importlib import resources
from importlib.metadata import EntryPoint, entry_points
from typing import Any

PROFILES_GROUP = "unlearn_audit.profiles"
DATASETS_GROUP = "unlearn_audit.datasets"
ARCHITECTURES_GROUP = "unlearn_audit.architectures"


def registered(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def builtin_profiles_root() -> Any:
    return resources.files("unlearn_audit.fixtures")


def profile_roots() -> dict[str, Any]:
    """Every profile's recipe folder, by name: built in first; a registered name cannot replace a built-in one."""
    root = builtin_profiles_root()
    roots = {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    for name, ep in registered(PROFILES_GROUP).items():
        if name not in roots:
            roots[name] = resources.files(ep.value)
    return roots


def load_registered(group: str, name: str, builtin: dict[str, Any], what: str) -> Any:
    """A built-in entry of `builtin`, else one registered in the entry-point `group`, else a ValueError."""
    if name in builtin:
        return builtin[name]
    eps = registered(group)
    if name in eps:
        return eps[name].load()
    known = sorted(set(builtin) | set(eps))
    raise ValueError(f"unknown {what} {name!r}; known: {known} (packages add more through the entry-point group {group!r})")
