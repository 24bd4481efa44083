"""Attacks by kind: the built-in ones, and those other packages register as entry points.

A package adds an attack without editing this one: it subclasses `unlearn_audit.attacks.base.Attack`
(or `unlearn_audit.attacks.triggers.TriggerAttack`) and declares it in its `pyproject.toml`:

    [project.entry-points."unlearn_audit.attacks"]
    blended_backdoor = "mypkg.attack:BlendedBackdoor"

The entry point's name is the recipe's `[attack] kind`. Built-in kinds cannot be overridden. The
lookup is the suite's one `Registry` (`unlearn_audit.registry`); the built-ins are named lazily, so
importing this module imports no attack (nor torch).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from unlearn_audit.attacks.base import Attack
from unlearn_audit.registry import Registry

ENTRY_POINT_GROUP = "unlearn_audit.attacks"

BUILTIN_ATTACKS = {
    "gaussian": "unlearn_audit.attacks.gaussian:GaussianAttack",
    "backdoor": "unlearn_audit.attacks.backdoor:BackdoorAttack",
    "trigger_word": "unlearn_audit.attacks.trigger_word:TriggerWordAttack",
    "gradient_canceling": "unlearn_audit.attacks.gradient_canceling:GradientCancelingAttack",
    "witches_brew": "unlearn_audit.attacks.witches_brew:WitchesBrewAttack",
}


def _is_attack_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, Attack)


ATTACKS: Registry[type[Attack]] = Registry(
    "attack kind",
    ENTRY_POINT_GROUP,
    BUILTIN_ATTACKS,
    accepts=_is_attack_class,
    expected="an unlearn_audit Attack subclass",
)


def attack_kinds() -> list[str]:
    """Every kind a recipe may name: built in and registered."""
    return ATTACKS.names()


@cache
def get_attack(kind: str) -> Attack:
    """The attack of a recipe's `[attack] kind` (a ValueError naming the known kinds if there is none)."""
    cls = ATTACKS.get(kind)
    attack = cls()
    if getattr(attack, "kind", None) != kind:
        raise ValueError(
            f"attack class {cls.__qualname__} has kind {getattr(attack, 'kind', None)!r} but is registered as {kind!r}"
        )
    return attack
