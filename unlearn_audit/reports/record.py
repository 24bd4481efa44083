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

SCHEMA_VERSION = 3
"""Version of the JSON report's layout; a baseline of a version it cannot read is refused with a message.

3: each result says what its score measures (`metric`, `unit`: the check's declaration, or the attack's
poison metric), so that tools need not guess it from the rule's text. 2: each test pools its seeds
(`seeds`, every seed's own result in `details.per_seed`); results are matched on their seeds; read as 3
with `metric` and `unit` empty. 1: one test per seed (`seed`); its results read as one-seed tests."""

COMPATIBLE_SCHEMAS = (2, SCHEMA_VERSION)
"""Layouts whose results read as this version's (one test pools its seeds; a field a layout lacks takes its
default), so that reports written before an upgrade can still be merged and assembled with today's."""

CASE_PROPERTY = "unlearn_audit.case"
RESULT_PROPERTY = "unlearn_audit"

OUTCOME_OF_VERDICT = {"pass": "passed", "fail": "failed", "xfail": "xfailed", "skip": "skipped"}
"""A check's verdict as the pytest outcome it leads to."""

KEY_FIELDS = ("unlearner", "check", "scenario", "profile", "seeds", "budget")
"""What identifies a result across runs (the baseline matches on it)."""


@dataclass(frozen=True)
class ResultRecord:
    """One test's result: the case, its outcome, and the check's score with its uncertainty and rule."""

    nodeid: str
    unlearner: str | None
    check: str | None
    scenario: str | None
    profile: str | None
    seed: int | None  # the seed of a one-seed test (None when several are pooled)
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
    seeds: list[int] | None = None  # every seed the test pooled
    metric: str = ""  # what `score` measures ("clean test accuracy"); empty in reports before schema 3
    unit: str = ""  # its unit ("fraction", "z-score", "nats", "example-gradients"); see `checks.base.CheckInfo`
    reference_label: str = (
        ""  # what `reference` is ("retrain", "retrain and 24 clean models", "budget"); empty in older reports
    )

    def __post_init__(self) -> None:
        if self.seeds is None and self.seed is not None:  # a schema-1 record: one test per seed
            object.__setattr__(self, "seeds", [self.seed])

    @property
    def key(self) -> tuple[Any, ...]:
        """What identifies this result across runs (`KEY_FIELDS`)."""
        return key_of(self.to_json())

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResultRecord:
        """From a report's result entry (unknown keys, e.g. of a newer minor layout, are ignored; keys an older
        layout lacks take their defaults: `metric` and `unit` are empty before schema 3)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("nodeid", "")
        for name in ("unlearner", "check", "scenario", "profile", "seed", "budget"):  # "seeds": from "seed"
            values.setdefault(name, None)
        return cls(**values)


def key_of(r: dict[str, Any]) -> tuple[Any, ...]:
    """The identifying key of a result entry of a report (`KEY_FIELDS`)."""
    budget = r.get("budget")
    seeds = r.get("seeds") or ([r["seed"]] if r.get("seed") is not None else None)

    def value(k: str) -> Any:
        if k == "budget":
            return round(budget, 6) if budget is not None else None
        if k == "seeds":
            return tuple(seeds) if seeds is not None else None
        return r.get(k)

    return tuple(value(k) for k in KEY_FIELDS)


@dataclass(frozen=True)
class FixtureBuild:
    """The build of a fixture that one seed of a result was measured on (`scenarios.provenance`)."""

    seed: int | None
    fixture_id: str  # equal exactly when two runs used the same weights and data
    built_with: str  # what built it, in a few words


def builds_measured_on(r: dict[str, Any]) -> tuple[FixtureBuild, ...] | None:
    """Each pooled seed's fixture build, from a report's result entry; None when the report does not say
    (written before results named their fixture's build)."""
    meta = r.get("meta") or {}
    seeds = [m for m in meta.get("per_seed") or [meta] if isinstance(m, dict)]
    if not seeds or any(not isinstance(m.get("fixture_id"), str) or not m["fixture_id"] for m in seeds):
        return None
    return tuple(FixtureBuild(m.get("seed"), m["fixture_id"], str(m.get("fixture_built_with") or "?")) for m in seeds)


def builders(builds: tuple[FixtureBuild, ...] | list[FixtureBuild]) -> list[str]:
    """What built these fixtures, each once, sorted."""
    return sorted({b.built_with for b in builds})


def seeds_range(seeds: list[int] | tuple[int, ...]) -> str:
    """Seeds as test ids and the summary table show them: `0`, `0-4` (a run of seeds), `1,5,9`."""
    seeds = list(seeds)
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def seeds_text(r: ResultRecord) -> str:
    """The record's seeds for the summary table."""
    return seeds_range(r.seeds) if r.seeds else str(r.seed)


def per_seed_records(r: ResultRecord) -> list[ResultRecord]:
    """A pooled result as one record per seed (each seed's own verdict and details), for tools that
    show seeds one by one (calibration tables, plots); a one-seed result is itself."""
    entries = r.details.get("per_seed")
    if not entries:
        return [r]
    from dataclasses import replace

    return [
        replace(
            r,
            seed=e["seed"],
            seeds=[e["seed"]],
            verdict=e["verdict"],
            score=e["score"],
            stderr=e["stderr"],
            reference=e["reference"],
            reference_stderr=e["reference_stderr"],
            message=e.get("message", ""),
            details=e.get("details", {}),
            outcome=OUTCOME_OF_VERDICT.get(e["verdict"], r.outcome),
        )
        for e in entries
    ]
