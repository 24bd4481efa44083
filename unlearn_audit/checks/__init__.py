"""The checks, registered by name in one place: check `X` is the module `unlearn_audit.checks.X`,
with `NAME = "X"` and `run(ctx) -> CheckResult`, and is judged by `conformance/test_X.py`."""

from __future__ import annotations

import functools
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
    """Check `name`'s `run`, evaluating under the numerics of the fixture's training recipe (bf16 on a GPU
    profile's CUDA device, fp32 on the CPU: `training.numerics`)."""
    if name not in CHECK_NAMES:
        raise KeyError(f"unknown check {name!r}; known: {', '.join(CHECK_NAMES)}")
    run: Callable[[CheckContext], CheckResult] = import_module(f"{__name__}.{name}").run

    @functools.wraps(run)
    def run_in_fixture_numerics(ctx: CheckContext) -> CheckResult:
        from unlearn_audit.training.numerics import evaluating_fixture_of

        with evaluating_fixture_of(ctx.fixture.recipe.training):
            return run(ctx)

    return run_in_fixture_numerics


__all__ = ["CHECK_NAMES", "REMOVAL_CHECKS", "CheckContext", "CheckResult", "get_check"]
