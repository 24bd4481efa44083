"""The audit report: records collected from test reports, the JSON file, the summary table.

Torch-free: it runs on the xdist controller, which only sees test reports. Scores travel
there in each report's `user_properties`, so JUnit XML carries them too.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearn_audit.jsonsafe import finite
from unlearn_audit.reports.record import (
    CASE_PROPERTY,
    RESULT_PROPERTY,
    SCHEMA_VERSION,
    ResultRecord,
    per_seed_records,
    seeds_text,
)


def outcome_of(report: Any) -> str | None:
    """passed/failed/skipped/xfailed/error for the phase that decides a test, else None."""
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            return "xfailed" if report.skipped else "xpassed"
        return report.outcome
    if report.failed:
        return "error"
    if report.when == "setup" and report.skipped:
        return "skipped"
    return None


def write_report(document: dict[str, Any], path: Path) -> None:
    """Atomically write a report document; non-finite numbers become null (strict JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(finite(document), indent=2, allow_nan=False))
    tmp.replace(path)


@dataclass
class ReportCollector:
    options: dict[str, Any]
    started: float = field(default_factory=time.time)
    results: dict[str, ResultRecord] = field(default_factory=dict)

    def add(self, report: Any) -> None:
        """Fold one phase's test report into its test's record (only audit tests carry a case)."""
        outcome = outcome_of(report)
        if outcome is None:
            return
        props = dict(report.user_properties)
        if CASE_PROPERTY not in props:
            return
        case = json.loads(props[CASE_PROPERTY])
        judged = json.loads(props[RESULT_PROPERTY]) if RESULT_PROPERTY in props else {}
        result = judged.get("result") or {}
        previous = self.results.get(report.nodeid)
        self.results[report.nodeid] = ResultRecord(
            nodeid=report.nodeid,
            **case,
            outcome=outcome,
            verdict=result.get("verdict"),
            score=result.get("score"),
            stderr=result.get("stderr"),
            reference=result.get("reference"),
            reference_stderr=result.get("reference_stderr"),
            direction=result.get("direction"),
            rule=result.get("rule"),
            metric=result.get("metric") or "",
            unit=result.get("unit") or "",
            reference_label=result.get("reference_label") or "",
            message=result.get("message") or (_longrepr_head(report) if outcome in ("failed", "error") else ""),
            details=result.get("details", {}),
            meta=judged.get("meta", {}),
            baseline=judged.get("baseline"),
            duration=(previous.duration if previous else 0.0) + getattr(report, "duration", 0.0),
        )

    def records(self) -> list[ResultRecord]:
        """The collected result records, in test order."""
        return sorted(
            self.results.values(), key=lambda r: (str(r.unlearner), str(r.check), str(r.scenario), r.seeds or [])
        )

    def document(self) -> dict[str, Any]:
        """The JSON report document (schema, run metadata, results)."""
        import importlib.metadata as md

        def version(pkg: str) -> str | None:
            try:
                return md.version(pkg)
            except md.PackageNotFoundError:
                return None

        return {
            "schema_version": SCHEMA_VERSION,
            "tool": "unlearn-audit",
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "options": self.options,
            "versions": {
                "unlearn_audit": version("unlearn-audit"),
                "torch": version("torch"),
                "python": sys.version.split()[0],
                "platform": platform.platform(),
            },
            "timings": {"session_seconds": time.time() - self.started},
            "results": [r.to_json() for r in self.records()],
        }

    def write(self, path: Path) -> None:
        """Write the JSON report to `path`."""
        write_report(self.document(), path)

    def table(self, width: int | None = None, color: bool = False) -> str:
        """The verdict table for the terminal summary."""
        from io import StringIO

        from rich import box
        from rich.console import Console
        from rich.table import Table

        table = Table(
            title=(
                "unlearn-audit: score ± stderr (at attacker size k); reference: retrain under the same measurement "
                "(budget_respected: the budget); MDE: the smallest excess over (shortfall below) the reference "
                "detected with probability 0.8"
            ),
            box=box.SIMPLE_HEAD,
            title_justify="left",
        )
        numeric = ("seeds", "score ± se", "reference", "MDE", "original")
        for col in ("unlearner", "check", "scenario", "seeds", "score ± se", "reference", "MDE", "original", "outcome"):
            table.add_column(
                col,
                justify="right" if col in numeric else "left",
                no_wrap=True,
            )
        styles = {"passed": "green", "failed": "red", "error": "red", "xfailed": "yellow", "skipped": "yellow"}
        for r in self.records():
            d = r.details or {}
            table.add_row(
                str(r.unlearner).rpartition(":")[2],
                str(r.check),
                str(r.scenario),
                seeds_text(r),
                _pm(r.score, r.stderr) + (f" ({d['score_part']})" if isinstance(d.get("score_part"), str) else ""),
                _num(r.reference),
                _mde(d),
                _num(_original(r)),
                f"[{styles.get(str(r.outcome), 'white')}]{r.outcome}[/]" + (" (low power)" if _low_power(d) else ""),
            )
        buf = StringIO()
        Console(file=buf, width=width or 120, force_terminal=color, color_system="standard" if color else None).print(
            table
        )
        return "".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines())  # rich pads every line


def _original(r: ResultRecord) -> float | None:
    """The poisoned original's score (the mean over the seeds of a pooled test); for a test over attacker
    sizes, at the k whose score is shown."""
    part = (r.details or {}).get("score_part")
    values = []
    for one in per_seed_records(r):
        d = one.details or {}
        v = d.get("original_gus", d.get("original_attack_success", d.get("original_accuracy")))
        at_part = [e.get("original") for e in d.get("relearning") or [] if f"k={e.get('k')}" == part]
        if at_part:  # relearning: at the k shown, which for a pooled result may differ from this seed's own
            v = at_part[0]
        if isinstance(v, (int, float)):
            values.append(float(v))
    return sum(values) / len(values) if values else None


def _mde(details: dict[str, Any]) -> str:
    """The minimal detectable effect of the score shown (its part's, for a test over parts such as attacker
    sizes k); "none" when no excess within the score's range is detected."""
    from unlearn_audit.checks.base import shown_mde

    mde, part = shown_mde(details)
    if mde is not None:
        return _num(mde)
    return "none" if part is not None or details.get("mde_note") else ""


def _low_power(details: dict[str, Any]) -> bool:
    from unlearn_audit.checks.base import POWER_TARGET as TARGET

    power = details.get("power")
    return power is not None and not power >= TARGET


def _num(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3f}"


def _pm(v: Any, se: Any) -> str:
    if v is None:
        return ""
    if se:
        return f"{v:.3f} ± {se:.3f}"
    return f"{v:.0f}" if float(v).is_integer() else _num(v)  # no uncertainty: an exact count, or none recorded


def _longrepr_head(report: Any) -> str:
    text = str(getattr(report, "longrepr", "") or "")
    return text[-2000:]
