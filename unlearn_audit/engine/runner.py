"""Run one unlearner on one fixture, defensively.

The method gets a private deep copy of the poisoned model and private copies of the data.
While it runs, forward pre-hooks on every layer that holds parameters count the examples
that pass through with autograd enabled (the harness's own count of example-gradients, not
the method's word) and stop the method at the deadline. Whatever the method does (raise,
hang, return NaN weights or another architecture, modify its inputs) ends as an
`UnlearnOutcome` with an error message, never as a crashed session.
"""

from __future__ import annotations

import copy
import math
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from unlearn_audit.scenarios.fixture import Fixture, tensor_fingerprint
from unlearn_audit.profiles.models import nonfinite_tensors, same_architecture
from unlearn_audit.protocol import Budget, UnlearningRequest


class UnlearnerCancelled(RuntimeError):
    """Raised inside the method's forward passes once its time is up."""


@dataclass
class UnlearnOutcome:
    model: nn.Module | None
    example_gradients: int
    seconds: float
    budget: Budget
    error: str | None = None
    exempt_from_budget: bool = False
    fixture_tampered: bool = False  # the harness's in-memory fixture changed: reload it before reuse

    @property
    def ok(self) -> bool:
        return self.error is None


class ExampleGradientCounter:
    """Counts examples forwarded with autograd on, per parameterised layer; the max is the spend.

    Counting at every layer (and taking the maximum) also catches methods that train only part
    of the network, e.g. a classifier head fed with precomputed features.
    """

    def __init__(self, deadline: float) -> None:
        self.per_layer: dict[str, int] = {}
        self.deadline = deadline
        self.active = True
        self.cancelled = False

    @property
    def total(self) -> int:
        return max(self.per_layer.values(), default=0)

    def _hook_for(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            # Cancellation outlives the run: a timed-out method that keeps going is stopped at
            # its next forward pass, even after the harness has stopped counting.
            if self.cancelled:
                raise UnlearnerCancelled("unlearner exceeded its time limit")
            if not self.active:
                return
            if time.monotonic() > self.deadline:
                self.cancelled = True
                raise UnlearnerCancelled("unlearner exceeded its time limit")
            if torch.is_grad_enabled() and args and isinstance(args[0], torch.Tensor) and args[0].dim() > 0:
                self.per_layer[name] = self.per_layer.get(name, 0) + int(args[0].shape[0])

        hook._unlearn_audit_counter = True  # type: ignore[attr-defined]
        return hook

    def attach(self, model: nn.Module) -> nn.Module:
        for name, module in model.named_modules():
            if any(True for _ in module.parameters(recurse=False)):
                module.register_forward_pre_hook(self._hook_for(name or "<root>"))
        return model


def strip_counter_hooks(model: nn.Module) -> None:
    for module in model.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if getattr(hook, "_unlearn_audit_counter", False):
                del module._forward_pre_hooks[key]


def _short_traceback(exc: BaseException) -> str:
    frames = traceback.format_exception(type(exc), exc, exc.__traceback__)
    text = "".join(frames)
    return text if len(text) < 4000 else "...\n" + text[-4000:]


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
    total = fixture.recipe.training.example_gradients(fixture.num_train)
    budget = Budget(budget_fraction, math.floor(budget_fraction * total + 1e-9))  # 0.7 * 43110 is 30176.999...
    counter = ExampleGradientCounter(deadline=time.monotonic() + timeout)
    build = fixture.factory  # the closure must not reach the fixture (its secret, its reference models)

    def counted_factory() -> nn.Module:
        return counter.attach(build()).to(device)

    forget, retain, validation = fixture.forget_set(), fixture.retain_set(), fixture.validation_set()
    def request_data() -> dict[str, torch.Tensor]:
        return {"fx": forget.inputs, "fy": forget.labels, "rx": retain.inputs, "ry": retain.labels,
                "vx": validation.inputs, "vy": validation.labels}

    data_before = tensor_fingerprint(request_data())
    fixture_before = fixture.fingerprint()
    request = UnlearningRequest(
        forget=forget,
        retain=retain,
        budget=budget,
        recipe=fixture.recipe.training,
        model_factory=counted_factory,
        num_classes=fixture.num_classes,
        device=device,
        seed=seed,
        generator=torch.Generator().manual_seed(seed),
        profile=fixture.recipe.profile,
        validation=validation,
    )
    model = counter.attach(copy.deepcopy(fixture.original).to(device))
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                result["model"] = unlearner.unlearn(model, request)
        except BaseException as exc:  # noqa: BLE001 - everything the method raises is its failure
            result["error"] = exc

    started = time.perf_counter()
    thread = threading.Thread(target=target, name="unlearn-audit-unlearner", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        counter.cancelled = True  # the method's next forward pass raises UnlearnerCancelled
        thread.join(5.0)
    seconds = time.perf_counter() - started
    counter.active = False
    spent = counter.total

    def failed(message: str) -> UnlearnOutcome:
        return UnlearnOutcome(None, spent, seconds, budget, message, exempt_from_budget)

    # Checked first and on every path: a method that raised or hung may still have touched it.
    if fixture.fingerprint() != fixture_before:
        outcome = failed("the fixture held by the harness changed while unlearn() ran; a method must not touch it")
        outcome.fixture_tampered = True
        return outcome
    if counter.cancelled or thread.is_alive():
        note = "" if not thread.is_alive() else " (it is still running in a background thread and could not be stopped)"
        return failed(f"unlearn() did not finish within the time limit of {timeout:.0f} s (--audit-timeout){note}")
    if "error" in result:
        exc = result["error"]
        return failed(f"unlearn() raised {type(exc).__name__}: {exc}\n{_short_traceback(exc)}")
    returned = result.get("model")
    arch_problem = same_architecture(returned, fixture.original)
    if arch_problem:
        return failed(f"unlearn() returned an unusable model: {arch_problem}")
    bad = nonfinite_tensors(returned)
    if bad:
        return failed(f"unlearn() returned a model with NaN/Inf values in {len(bad)} tensors, e.g. {bad[:3]}")
    data_after = tensor_fingerprint(request_data())
    if data_after != data_before:
        return failed("unlearn() modified the request's forget/retain/validation data in place; a method must treat it as read-only")
    # Audit a private copy of the returned weights in a fresh model of the fixture's architecture:
    # no hooks, frozen flags, dtype or shared identity of the method's object survive into the checks.
    try:
        with torch.random.fork_rng(devices=[]):  # its throwaway initialisation must not move the global RNG
            audited = build().to(device)
        audited.load_state_dict(returned.state_dict())
    except (RuntimeError, TypeError, ValueError) as exc:
        return failed(f"unlearn() returned weights that do not load into the architecture: {exc}")
    return UnlearnOutcome(audited.eval(), spent, seconds, budget, None, exempt_from_budget)
