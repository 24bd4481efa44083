"""Exact differences between two reports: did a refactor or a dependency bump change any verdict or score?

`unlearn-audit compare` asks whether a method got significantly worse; `unlearn-audit diff` asks
whether anything changed at all. Results are matched on (unlearner, check, scenario, profile, seeds,
budget); for each, the outcome, verdict, score, uncertainty, reference, rule, message and details
are compared, except timings (keys named `seconds` or ending in `_seconds`) and any detail key
given in `ignore`; and what the score measures (metric, unit) where both reports say it (a report
before schema 3 does not). A result measured on another build of its fixture says so first: another
torch or CPU kernel builds other weights, and that explains a difference of scores on its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unlearn_audit.reports.record import ResultRecord, builders, builds_measured_on

COMPARED = ("outcome", "verdict", "score", "stderr", "reference", "reference_stderr", "direction", "rule", "message")
COMPARED_WHERE_KNOWN = ("metric", "unit")
"""Empty in reports before schema 3: compared only when both reports have them, so an upgrade is not a difference."""


def _strip(value: Any, ignore: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip(v, ignore)
            for k, v in value.items()
            if k not in ignore and k != "seconds" and not k.endswith("_seconds")
        }
    if isinstance(value, list):
        return [_strip(v, ignore) for v in value]
    return value


class ReportError(ValueError):
    """A file that is not a readable unlearn-audit JSON report (a usage error, not a difference)."""


def load_records(path: Path) -> dict[tuple[Any, ...], ResultRecord]:
    """The report's results by their key; ReportError naming the file if it is missing or not a report."""
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: not a JSON report ({exc})") from None
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, list):
        raise ReportError(f"{path}: not an unlearn-audit JSON report (no list of 'results')")
    try:
        return {r.key: r for r in (ResultRecord.from_json(d) for d in results)}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReportError(f"{path}: a result it holds is malformed ({type(exc).__name__}: {exc})") from None


def diff_reports(old: Path, new: Path, ignore: tuple[str, ...] = ()) -> list[str]:
    """One line per difference (empty: the reports agree on every result)."""
    skip = frozenset(ignore)
    a, b = load_records(old), load_records(new)
    lines = [f"only in {old}: {k}" for k in sorted(set(a) - set(b), key=str)]
    lines += [f"only in {new}: {k}" for k in sorted(set(b) - set(a), key=str)]
    for key in sorted(set(a) & set(b), key=str):
        ra, rb = a[key], b[key]
        builds_a, builds_b = builds_measured_on(ra.to_json()), builds_measured_on(rb.to_json())
        if builds_a is not None and builds_b is not None:
            ids_a, ids_b = (", ".join(b.fixture_id for b in builds) for builds in (builds_a, builds_b))
            if ids_a != ids_b:
                how_a, how_b = ("; ".join(builders(builds)) for builds in (builds_a, builds_b))
                lines.append(f"{key}: fixture {ids_a} -> {ids_b} (built with {how_a} -> {how_b})")
        for name in COMPARED:
            if getattr(ra, name) != getattr(rb, name):
                lines.append(f"{key}: {name} {getattr(ra, name)!r} -> {getattr(rb, name)!r}")
        for name in COMPARED_WHERE_KNOWN:
            if getattr(ra, name) and getattr(rb, name) and getattr(ra, name) != getattr(rb, name):
                lines.append(f"{key}: {name} {getattr(ra, name)!r} -> {getattr(rb, name)!r}")
        da, db = _strip(ra.details, skip), _strip(rb.details, skip)
        for name in sorted(set(da) | set(db)):
            if json.dumps(da.get(name), sort_keys=True) != json.dumps(db.get(name), sort_keys=True):
                lines.append(f"{key}: details.{name} differs")
    return lines
