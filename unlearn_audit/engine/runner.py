"""Run one unlearner on one fixture, defensively: the outcome record and the in-process mode.

The default is process isolation (`unlearn_audit.engine.isolated`): the method runs in its own
worker process and sees only the request. `run_unlearner` here is `--audit-isolation inline`: the
same instruments (`engine.execute`) in the harness's own process, in a thread with a deadline, for
debugging a method with a debugger. Either way, whatever the method does (raise, hang, return NaN
weights or another architecture, modify its inputs) ends as an `UnlearnOutcome` with an error
message, never as a crashed session.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from unlearn_audit.engine.copy_detection import closeness, closeness_details, copy_problem
from unlearn_audit.engine.counting import ExampleGradientCounter
from unlearn_audit.engine.execute import Execution, execute
from unlearn_audit.engine.returned import audited_copy
from unlearn_audit.engine.seeding import preserved_global_rng
from unlearn_audit.protocol import Budget, UnlearningRequest
from unlearn_audit.scenarios.fixture import Fixture


@dataclass(frozen=True)
class UnlearnOutcome:
    model: nn.Module | None
    example_gradients: int
    seconds: float
    budget: Budget
    error: str | None = None  # what went wrong, in a line or a few
    exempt_from_budget: bool = False
    fixture_tampered: bool = False  # the harness's in-memory fixture changed: reload it before reuse
    traceback: str | None = None
    spend_problem: str | None = None  # why the counted spend cannot be trusted (counter hooks removed)
    output: dict[str, Any] = field(default_factory=dict)  # the method's captured stdout, stderr, warnings
    details: dict[str, Any] = field(default_factory=dict)  # e.g. the distance to the retrain reference

    @property
    def ok(self) -> bool:
        """Whether the call returned a usable model (no error, no copy of a reference)."""
        return self.error is None


def budget_for(fixture: Fixture, fraction: float) -> Budget:
    """The example-gradient budget of `fraction` of the fixture's original training."""
    total = fixture.recipe.training.example_gradients(fixture.num_train)
    return Budget(fraction, math.floor(fraction * total + 1e-9))  # 0.7 * 43110 is 30176.999...


def finish(
    execution: Execution,
    state: dict[str, torch.Tensor] | None,
    fixture: Fixture,
    budget: Budget,
    device: torch.device,
    exempt: bool,
    output: dict[str, Any],
) -> UnlearnOutcome:
    """The outcome of a finished call: load and vet the returned weights (shared by both modes)."""
    failed = UnlearnOutcome(
        None,
        execution.example_gradients,
        execution.seconds,
        budget,
        execution.error,
        exempt,
        traceback=execution.traceback,
        spend_problem=execution.spend_problem,
        output=output,
    )
    if failed.error is not None or state is None:
        return replace(failed, error=failed.error or "unlearn() returned no weights")
    model, problem = audited_copy(state, fixture, device)
    if model is None:
        return replace(failed, error=problem)
    found, yardstick = closeness(model, fixture, device)
    error = copy_problem(found, yardstick)
    return replace(
        failed,
        model=model if error is None else None,
        error=error,
        details={"reference_closeness": closeness_details(found, yardstick)},
    )


def run_unlearner(
    unlearner: Any,
    fixture: Fixture,
    *,
    budget_fraction: float,
    seed: int,
    timeout: float,
    device: torch.device,
    exempt_from_budget: bool = False,
) -> UnlearnOutcome:
    """`--audit-isolation inline`: run the method in this process, in a thread stopped at its deadline.

    The method gets a private deep copy of the poisoned model and private copies of the data. It
    can reach everything in this process; only the checks after the call (the fixture's fingerprint,
    the reference match) guard the harness, and a hang that never calls forward cannot be stopped.
    """
    budget = budget_for(fixture, budget_fraction)
    counter = ExampleGradientCounter(deadline=time.monotonic() + timeout)
    build = fixture.factory  # the closure must not reach the fixture (its secret, its reference models)
    forget, retain, validation = fixture.forget_set(), fixture.retain_set(), fixture.validation_set()
    fixture_before = fixture.fingerprint()
    request = UnlearningRequest(
        forget=forget,
        retain=retain,
        budget=budget,
        recipe=fixture.recipe.training,
        model_factory=lambda: build().to(device),
        num_classes=fixture.num_classes,
        device=device,
        seed=seed,
        generator=torch.Generator().manual_seed(seed),
        profile=fixture.recipe.profile,
        validation=validation,
    )
    model = copy.deepcopy(fixture.original).to(device)
    result: dict[str, Execution] = {}

    def target() -> None:
        with preserved_global_rng():
            result["done"] = execute(unlearner, model, request, fixture.original, counter)

    thread = threading.Thread(target=target, name="unlearn-audit-unlearner", daemon=True)
    started = time.perf_counter()
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        counter.cancelled = True  # the method's next forward pass raises UnlearnerCancelled
        thread.join(5.0)
    seconds = time.perf_counter() - started
    if (
        fixture.fingerprint() != fixture_before
    ):  # checked on every path: a method that raised or hung may have touched it
        outcome = UnlearnOutcome(
            None,
            counter.total,
            seconds,
            budget,
            "the fixture held by the harness changed while unlearn() ran; a method must not touch it",
            exempt_from_budget,
            fixture_tampered=True,
        )
        return outcome
    if "done" not in result or result["done"].cancelled:
        note = " (it is still running in a background thread and could not be stopped)" if thread.is_alive() else ""
        return UnlearnOutcome(
            None,
            counter.total,
            seconds,
            budget,
            f"unlearn() did not finish within the time limit of {timeout:.0f} s (--audit-timeout){note}",
            exempt_from_budget,
        )
    done = result["done"]
    state = done.returned.state_dict() if done.returned is not None else None
    return finish(done, state, fixture, budget, device, exempt_from_budget, {"warnings": list(done.warnings)})
