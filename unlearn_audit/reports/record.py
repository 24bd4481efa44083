"""One audit result as a typed record: what the JSON report stores, the baseline gate compares and the
summary table shows (torch-free: it lives on the xdist controller too).

A conformance test records its case in two user properties: `unlearn_audit.case` (the case's
parameters, added when the test is collected, so that a test that errors before it is judged is
still attributed to its unlearner, check, scenario and seed) and `unlearn_audit` (the judged
result, added by `AuditCase.judge`). Both travel with the test report, so JUnit XML carries them too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

SCHEMA_VERSION = 1
"""Version of the JSON report's layout; a baseline of another version is refused with a message."""

CASE_PROPERTY = "unlearn_audit.case"
RESULT_PROPERTY = "unlearn_audit"

OUTCOME_OF_VERDICT = {"pass": "passed", "fail": "failed", "xfail": "xfailed", "skip": "skipped"}
"""A check's verdict as the pytest outcome it leads to."""

KEY_FIELDS = ("unlearner", "check", "scenario", "profile", "seed", "budget")
"""What identifies a result across runs (the baseline matches on it)."""


@dataclass(frozen=True)
class ResultRecord:
    """One test's result: the case, its outcome, and the check's score with its uncertainty and rule."""

    nodeid: str
    unlearner: str | None
    check: str | None
    scenario: str | None
    profile: str | None
    seed: int | None
    budget: float | None
    outcome: str | None = None  # passed / failed / error / skipped / xfailed / xpassed
    verdict: str | None = None  # pass / fail / xfail / skip (None when the check did not run)
    score: float | None = None
    stderr: float | None = None
    reference: float | None = None
    reference_stderr: float | None = None
    direction: str | None = None
    rule: str | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None
    duration: float = 0.0

    @property
    def key(self) -> tuple[Any, ...]:
        return key_of(self.to_json())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ResultRecord":
        """From a report's result entry (unknown keys, e.g. of a newer minor layout, are ignored)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("nodeid", "")
        for name in ("unlearner", "check", "scenario", "profile", "seed", "budget"):
            values.setdefault(name, None)
        return cls(**values)


def key_of(r: dict[str, Any]) -> tuple[Any, ...]:
    budget = r.get("budget")
    return tuple(round(budget, 6) if k == "budget" and budget is not None else r.get(k) for k in KEY_FIELDS)
