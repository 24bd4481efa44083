"""Removal means removal with the model kept: every removal check also applies the utility rule.

A freshly initialised model has no poison in it, and neither does one wrecked by a destructive
learning rate; without this rule both pass `gaussian_leakage`, `not_mode_connected` and, often,
`relearning_resistant`. The removal check's own verdict stays in the details
(`removal_verdict`), so a user can still see what the poison metric alone said.
"""

from __future__ import annotations

import dataclasses

from unlearn_audit.checks.base import CheckResult


def conditioned_on_utility(removal: CheckResult, utility: CheckResult) -> CheckResult:
    """The removal result, failed if it passed on a model that fails the scenario's utility rule."""
    details = {
        **removal.details,
        "removal_verdict": removal.verdict,
        "utility_verdict": utility.verdict,
        "utility_accuracy": utility.score,
        "utility_retrain_accuracy": utility.reference,
    }
    rule = f"{removal.rule}; and the utility rule: {utility.rule}"
    if removal.verdict == "pass" and utility.verdict == "fail":
        message = (
            f"the poison metric looks removed, but clean test accuracy {utility.score:.3f} is significantly "
            f"below retrain's {utility.reference:.3f} ({utility.message}): "
            "removal by destroying the model is not removal"
        )
        return dataclasses.replace(removal, verdict="fail", rule=rule, message=message, details=details)
    return dataclasses.replace(removal, rule=rule, details=details)
