"""The checks, registered by name in one place: check `X` is the module `unlearn_audit.checks.X`,
with `NAME = "X"` and `run(ctx) -> CheckResult`, and is judged by `conformance/test_X.py`."""

from __future__ import annotations

from importlib import import_module
from typing import Callable

from unlearn_audit.checks.base import CheckContext, CheckResult

CHECK_NAMES = (
    "gaussian_leakage",
    "targeted_removed",
    "indiscriminate_restored",
    "utility_preserved",
    "budget_respected",
    "relearning_resistant",
    "not_mode_connected",
)

REMOVAL_CHECKS = ("gaussian_leakage", "targeted_removed", "indiscriminate_restored", "relearning_resistant",
                  "not_mode_connected")
"""The checks that judge whether the poison is gone (the others judge utility and compute)."""


def get_check(name: str) -> Callable[[CheckContext], CheckResult]:
    if name not in CHECK_NAMES:
        raise KeyError(f"unknown check {name!r}; known: {', '.join(CHECK_NAMES)}")
    return import_module(f"{__name__}.{name}").run


__all__ = ["CHECK_NAMES", "REMOVAL_CHECKS", "CheckContext", "CheckResult", "get_check"]
