"""The power of each check against the unremoved poison, stated next to its verdict.

A pass means something only if the test could have failed: the power is the probability that the
check fails the poisoned original itself (the poison not removed at all), from the original's
measured effect at the test's n and alpha. Below `TARGET` the message says "low power" and how
many seeds a pooled test would need to reach it (the effect adding up over seeds as Stouffer's z).
The details also say how many seeds reach it against half the original's standardised effect
(`seeds_for_power_0.8_half_effect`), a method that removed about half of the poison. The size of
residual the test sees is its minimal detectable effect (`checks.mde`).
"""

from __future__ import annotations

import dataclasses
import math

from unlearn_audit.checks.base import POWER_TARGET as TARGET
from unlearn_audit.checks.base import CheckResult
from unlearn_audit.stats import seeds_for_power, z_power


def with_power(
    result: CheckResult,
    effect: float,
    alpha: float,
    *,
    two_sided: bool = False,
    critical: float | None = None,
    against: str = "the poisoned original",
    seeds: int = 1,
) -> CheckResult:
    """`result` with its power (details `power`, `seeds_for_power_0.8`) and, when low, a message saying so.

    `effect` is one seed's standardised effect; a test pooled over `seeds` seeds sees it times sqrt(seeds).
    The effect and its test's shape are kept in the details (`power_effect`, ...), so that a pooled test
    can state its own power from its seeds'.
    """
    power = z_power(effect * math.sqrt(seeds), alpha, two_sided, critical)
    needed = seeds_for_power(effect, alpha, two_sided, TARGET, critical=critical) if not math.isinf(effect) else 1
    # Half the original's effect: a method that removed about half of the poison (on the standardised scale).
    needed_half = (
        seeds_for_power(effect / 2, alpha, two_sided, TARGET, critical=critical) if not math.isinf(effect) else 1
    )
    details = {
        **result.details,
        "power": power,
        f"seeds_for_power_{TARGET:g}": needed,
        f"seeds_for_power_{TARGET:g}_half_effect": needed_half if effect > 0 else None,
        "power_against": against,
        "power_effect": effect,
        "power_alpha": alpha,
        "power_two_sided": two_sided,
        "power_critical": critical,
    }
    message = result.message
    if math.isinf(effect) and effect < 0:
        needed = None
    if not power >= TARGET:  # also when nan: no measurable effect
        more = (
            f"about {needed} seed{'s' if needed != 1 else ''} would reach {TARGET:g}"
            if needed
            else f"no number of seeds up to 100 reaches {TARGET:g}"
        )
        at = f" at {seeds} seeds" if seeds > 1 else ""
        note = f"low power: {power:.2f}{at} against {against} ({more})"
        message = f"{message}; {note}" if message else note
    return dataclasses.replace(result, message=message, details=details)


def certain(result: CheckResult, against: str = "the poisoned original") -> CheckResult:
    """A check that fails the unremoved poison deterministically (power 1)."""
    details = {
        **result.details,
        "power": 1.0,
        f"seeds_for_power_{TARGET:g}": 1,
        # Not defined: the original's effect has no finite size to halve (its score is exactly off the null).
        f"seeds_for_power_{TARGET:g}_half_effect": None,
        "power_against": against,
        "power_effect": math.inf,
    }
    return dataclasses.replace(result, details=details)


def pooled_power(pooled: CheckResult, seeds: list[CheckResult]) -> CheckResult:
    """The pooled result with the power of the pooled test: the seeds' mean effect, times sqrt(#seeds).

    Stouffer's z of the seeds' effects, the same rule `seeds_for_power` assumes; a check whose power
    is certain on every seed stays certain.
    """
    found = [r.details.get("power_effect") for r in seeds]
    if not found or any(e is None for e in found):
        return pooled
    effects = [float(e) for e in found if e is not None]
    first = seeds[0].details
    if all(math.isinf(e) and e > 0 for e in effects):
        return certain(pooled, first.get("power_against", "the poisoned original"))
    mean = sum(effects) / len(effects)
    return with_power(
        pooled,
        mean if not math.isnan(mean) else float("nan"),
        first["power_alpha"],
        two_sided=first["power_two_sided"],
        critical=first["power_critical"],
        against=first["power_against"],
        seeds=len(seeds),
    )
