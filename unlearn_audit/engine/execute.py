"""One `unlearn()` call with the harness's instruments attached: seeds, the counter, warnings.

Shared by the worker process (the default) and the in-process mode, so that both count, seed and
capture in the same way and their verdicts agree. What the method returns is checked here for
what can be told without the harness's fixture (a module of the expected architecture, finite,
the request's data untouched); the harness checks the weights again when it loads them.
"""

from __future__ import annotations

import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from unlearn_audit.engine.counting import ExampleGradientCounter, UnlearnerCancelled
from unlearn_audit.engine.seeding import seed_everything
from unlearn_audit.profiles.models import nonfinite_tensors, same_architecture
from unlearn_audit.protocol import UnlearningRequest
from unlearn_audit.scenarios.fixture import tensor_fingerprint

MAX_WARNINGS = 20


@dataclass(frozen=True)
class Execution:
    """What happened in one call: the returned model (None on failure) and the evidence."""

    returned: nn.Module | None
    error: str | None  # one line: what went wrong
    traceback: str | None
    example_gradients: int
    seconds: float
    spend_problem: str | None
    warnings: tuple[str, ...]
    cancelled: bool = False


def _request_data(request: UnlearningRequest) -> dict[str, torch.Tensor]:
    sets = {"forget": request.forget, "retain": request.retain, "validation": request.validation}
    return {
        f"{name}.{part}": getattr(s, part) for name, s in sets.items() if s is not None for part in ("inputs", "labels")
    }


def _format_warning(w: warnings.WarningMessage) -> str:
    return f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}"


def execute(
    unlearner: Any, model: nn.Module, request: UnlearningRequest, reference: nn.Module, counter: ExampleGradientCounter
) -> Execution:
    """Seed, count and run `unlearner.unlearn(model, request)`; `reference` has the expected architecture."""
    data_before = tensor_fingerprint(_request_data(request))
    returned: Any = None
    error = trace = spend_problem = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        # torch says this of any compiled module while global hooks exist: the harness's counter, not the method
        warnings.filterwarnings("ignore", message=r"Using `torch\.compile\(module\)` when there are global hooks")
        seed_everything(request.seed)
        started = time.perf_counter()
        with counter:
            try:
                returned = unlearner.unlearn(model, request)
            except BaseException as exc:  # noqa: BLE001 - everything the method raises is its failure
                error = f"unlearn() raised {type(exc).__name__}: {exc}".splitlines()[0]
                trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            seconds = time.perf_counter() - started
            spend_problem = counter.verify()
    shown = tuple(dict.fromkeys(_format_warning(w) for w in caught))  # each distinct warning once
    notes = shown[:MAX_WARNINGS] + ((f"... {len(shown) - MAX_WARNINGS} more",) if len(shown) > MAX_WARNINGS else ())

    def result(problem: str | None = None, model_out: nn.Module | None = None) -> Execution:
        return Execution(model_out, problem, trace, counter.total, seconds, spend_problem, notes, counter.cancelled)

    if counter.cancelled:
        return result("unlearn() did not finish within the time limit (--audit-timeout)")
    if error is not None:
        return result(error)
    problem = same_architecture(returned, reference)
    if problem:
        return result(f"unlearn() returned an unusable model: {problem}")
    bad = nonfinite_tensors(returned)
    if bad:
        return result(f"unlearn() returned a model with NaN/Inf values in {len(bad)} tensors, e.g. {bad[:3]}")
    if tensor_fingerprint(_request_data(request)) != data_before:
        return result(
            "unlearn() modified the request's forget/retain/validation data in place; "
            "a method must treat it as read-only"
        )
    return result(None, returned)


__all__ = ["Execution", "UnlearnerCancelled", "execute"]
