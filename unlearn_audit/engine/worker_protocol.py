"""What the harness and an unlearner's worker process say to each other (torch-free).

Everything crosses the process boundary as JSON lines or as files: the request's tensors and the
returned weights as safetensors, the rest as JSON. Nothing is pickled, so the harness never runs
code the method's process produced. Control messages go over a dedicated pipe, not the worker's
stdout, so whatever a method prints cannot be mistaken for a message.

Files of one job, in its own directory:

    request:  DATA_FILE (shared per fixture, read-only): forget_x/forget_y, retain_x/retain_y,
              validation_x/validation_y and `model.*`, the poisoned original's weights
    results:  REPORT_FILE (JSON, see `parse_report`), WEIGHTS_FILE (the returned state dict),
              STDOUT_FILE / STDERR_FILE (what the method wrote to file descriptors 1 and 2)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from unlearn_audit.scenarios.cache import sha256_file as file_sha256  # noqa: F401 - the protocol's checksum

DATA_FILE = "request.safetensors"
REPORT_FILE = "report.json"
WEIGHTS_FILE = "weights.safetensors"
STDOUT_FILE = "stdout.txt"
STDERR_FILE = "stderr.txt"
MODEL_PREFIX = "model."
WORKER_PRELOAD = (
    "numpy",
    "torch",
    "torch._dynamo",  # torch imports it at a method's first optimizer step: 1.4 CPU-s, once here instead
    "safetensors.torch",
    "unlearn_audit.engine.counting",
    "unlearn_audit.engine.execute",
    "unlearn_audit.engine.specs",
    "unlearn_audit.profiles.models",
    "unlearn_audit.engine.reaper",
    "unlearn_audit.engine.domain_reaper",
    "unlearn_audit.engine.sandbox",
    "unlearn_audit.engine.signal_guard",
    "unlearn_audit.engine.vmap_lanes",
    "unlearn_audit.engine.recompute",
    "unlearn_audit.engine.worker_main",
    "unlearn_audit.engine.forkserver_guard",  # last: in the fork server, it confines every child from here on
)
"""What every worker imports before its method: the forkserver imports it once, a spawned worker itself."""

OUTPUT_LIMIT = 4000  # bytes (characters, in ASCII) of captured stdout/stderr kept (the end, where the error usually is)


def encode(message: dict[str, Any]) -> bytes:
    return (json.dumps(message) + "\n").encode()


class MalformedReport(ValueError):
    """The worker's report is not what the protocol says (a method that overwrote it, or a harness bug)."""


@dataclass(frozen=True)
class UnlearnReport:
    """The worker's account of one `unlearn()` call.

    `error` is one line (exception type and message) and `traceback` the full text; `spend_problem`
    says why the counted spend cannot be trusted (the counter's hooks were removed), else None.
    """

    error: str | None
    traceback: str | None
    example_gradients: int
    seconds: float
    spend_problem: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "traceback": self.traceback,
            "example_gradients": self.example_gradients,
            "seconds": self.seconds,
            "spend_problem": self.spend_problem,
            "warnings": list(self.warnings),
        }


def _optional_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedReport(f"{key!r} is {type(value).__name__}, expected a string or null")
    return value


def parse_report(text: str) -> UnlearnReport:
    """Validate the report's JSON field by field (it was written by the method's process)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise MalformedReport(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedReport("not a JSON object")
    spent, seconds = doc.get("example_gradients"), doc.get("seconds")
    if not isinstance(spent, int) or isinstance(spent, bool) or spent < 0:
        raise MalformedReport(f"example_gradients is {spent!r}, expected a count")
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        raise MalformedReport(f"seconds is {seconds!r}, expected a number")
    warnings = doc.get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise MalformedReport("warnings is not a list of strings")
    return UnlearnReport(
        _optional_str(doc, "error"),
        _optional_str(doc, "traceback"),
        spent,
        float(seconds),
        _optional_str(doc, "spend_problem"),
        tuple(warnings),
    )
