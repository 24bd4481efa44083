"""Attacks by kind: the built-in ones, and those other packages register as entry points.

A package adds an attack without editing this one: it subclasses `unlearn_audit.attacks.base.Attack`
(or `unlearn_audit.attacks.triggers.TriggerAttack`) and declares it in its `pyproject.toml`:

    [project.entry-points."unlearn_audit.attacks"]
    blended_backdoor = "mypkg.attack:BlendedBackdoor"

The entry point's name is the recipe's `[attack] kind`. Built-in kinds cannot be overridden.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import import_module
from importlib.metadata import entry_points

from unlearn_audit.attacks.base import Attack

ENTRY_POINT_GROUP = "unlearn_audit.attacks"

BUILTIN_ATTACKS = {
    "gaussian": "unlearn_audit.attacks.gaussian:GaussianAttack",
    "backdoor": "unlearn_audit.attacks.backdoor:BackdoorAttack",
    "trigger_word": "unlearn_audit.attacks.trigger_word:TriggerWordAttack",
    "gradient_canceling": "unlearn_audit.attacks.gradient_canceling:GradientCancelingAttack",
    "witches_brew": "unlearn_audit.attacks.witches_brew:WitchesBrewAttack",
}


def attack_kinds() -> list[str]:
    """Every kind a recipe may name: built in, then registered."""
    return sorted(set(BUILTIN_ATTACKS) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


@lru_cache(maxsize=None)
def get_attack(kind: str) -> Attack:
    """The attack of a recipe's `[attack] kind` (a ValueError naming the known kinds if there is none)."""
    if kind in BUILTIN_ATTACKS:
        module, _, name = BUILTIN_ATTACKS[kind].partition(":")
        cls = getattr(import_module(module), name)
    else:
        matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == kind]
        if not matches:
            raise ValueError(f"unknown attack kind {kind!r}; known: {', '.join(attack_kinds())} "
                             f"(other packages add kinds through the entry-point group {ENTRY_POINT_GROUP!r})")
        cls = matches[0].load()
    if not (isinstance(cls, type) and issubclass(cls, Attack)):
        raise ValueError(f"attack kind {kind!r} is registered as {cls!r}, which is not an unlearn_audit Attack subclass")
    attack = cls()
    if getattr(attack, "kind", None) != kind:
        raise ValueError(f"attack class {cls.__qualname__} has kind {getattr(attack, 'kind', None)!r} but is registered as {kind!r}")
    return attack
