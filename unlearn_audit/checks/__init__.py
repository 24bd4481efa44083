"""The checks, by name. Each module has `NAME` and `run(ctx) -> CheckResult`."""

from __future__ import annotations

from importlib import import_module
from typing import Callable

from .base import CheckContext, CheckResult

CHECK_MODULES = {
    "gaussian_leakage": "gaussian_leakage",
    "targeted_removed": "targeted_removed",
    "indiscriminate_restored": "indiscriminate",
    "utility_preserved": "utility",
    "budget_respected": "budget",
    "relearning_resistant": "relearning",
    "not_mode_connected": "mode_connectivity",
}


def get_check(name: str) -> Callable[[CheckContext], CheckResult]:
    return import_module(f"{__name__}.{CHECK_MODULES[name]}").run


__all__ = ["CHECK_MODULES", "CheckContext", "CheckResult", "get_check"]
