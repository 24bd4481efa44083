"""The power of each check against the unremoved poison, stated next to its verdict.

A pass means something only if the test could have failed: the power is the probability that the
check fails the poisoned original itself (the poison not removed at all), from the original's
measured effect at the test's n and alpha. Below `TARGET` the message says "low power" and how
many seeds a pooled test would need to reach it (the effect adding up over seeds as Stouffer's z).
"""

from __future__ import annotations

import dataclasses
import math

from unlearn_audit.checks.base import POWER_TARGET as TARGET
from unlearn_audit.checks.base import CheckResult
from unlearn_audit.stats import seeds_for_power, z_power


def with_power(result: CheckResult, effect: float, alpha: float, *, two_sided: bool = False,
               critical: float | None = None, against: str = "the poisoned original") -> CheckResult:
    """`result` with its power (details `power`, `seeds_for_power_0.8`) and, when low, a message saying so."""
    power = z_power(effect, alpha, two_sided, critical)
    seeds = seeds_for_power(effect, alpha, two_sided, TARGET, critical=critical) if not math.isinf(effect) else 1
    details = {**result.details, "power": power, f"seeds_for_power_{TARGET:g}": seeds,
               "power_against": against}
    message = result.message
    if math.isinf(effect) and effect < 0:
        seeds = None
    if not power >= TARGET:  # also when nan: no measurable effect
        more = f"about {seeds} seed{'s' if seeds != 1 else ''} would reach {TARGET:g}" if seeds else f"no number of seeds up to 100 reaches {TARGET:g}"
        note = f"low power: {power:.2f} against {against} ({more})"
        message = f"{message}; {note}" if message else note
    return dataclasses.replace(result, message=message, details=details)


def certain(result: CheckResult, against: str = "the poisoned original") -> CheckResult:
    """A check that fails the unremoved poison deterministically (power 1)."""
    details = {**result.details, "power": 1.0, f"seeds_for_power_{TARGET:g}": 1, "power_against": against}
    return dataclasses.replace(result, details=details)
