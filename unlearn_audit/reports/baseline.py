"""Compare a run with a stored report: the regression gate of a method's CI.

A result regresses when its score is significantly worse than the baseline's for the same
(unlearner, check, scenario, profile, seeds, budget): a one-sided z-test on the difference of
the two scores with standard error sqrt(se_new^2 + se_old^2), at `ALPHA`. Scores without an
uncertainty (exact counts such as the budget) regress only when their verdict goes from pass
to fail. An identical rerun therefore never regresses; a change that moves a score by noise
does not either; a real degradation does. Results measured on another build of their fixture
are not compared (see `compare`).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from scipy import stats as st

from unlearn_audit.reports.record import (
    COMPATIBLE_SCHEMAS,
    KEY_FIELDS,
    SCHEMA_VERSION,
    ResultRecord,
    builders,
    builds_measured_on,
    key_of,
)

READABLE_SCHEMAS = (1, *COMPATIBLE_SCHEMAS)

ALPHA = 0.01


class BaselineError(ValueError):
    """The baseline file is missing or is not an unlearn-audit report."""


def load_baseline(
    path: Path, role: Literal["option", "old", "new"] = "option"
) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The results of a report by key. `role` says whose file it is, so that an error gives advice that fits:
    "option" (`--audit-baseline`), "old" (compare's baseline) or "new" (compare's report to judge)."""
    label = f"--audit-baseline {path}" if role == "option" else str(path)
    if role == "new":
        what, flags = "report", f"--audit-report {path}"
    else:
        what, flags = "baseline", f"--audit-baseline {path} --audit-update-baseline"
    if not path.is_file():
        raise BaselineError(f"{label}: no such file (write the {what} with a pytest run given {flags})")
    try:
        doc = json.loads(path.read_text())
        results = doc["results"]
        version = doc["schema_version"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BaselineError(f"{label}: not an unlearn-audit JSON report ({exc!r})") from None
    regenerate = f"regenerate the {what} with this version: {flags}"
    if version not in READABLE_SCHEMAS:
        raise BaselineError(
            f"{label}: report schema {version} is not supported (expected {SCHEMA_VERSION}); " + regenerate
        )
    if version == 1:
        _check_one_seed_per_test(label, results, regenerate)
    return {key_of(r): r for r in results}


def _check_one_seed_per_test(label: str, results: list[dict[str, Any]], regenerate: str) -> None:
    """A schema-1 report has one test per seed. Its one-seed runs are today's one-seed tests; its
    several-seed runs have no counterpart (today one test pools the seeds), so they cannot be compared."""
    seeds: dict[tuple[Any, ...], set[Any]] = {}
    for r in results:
        case = tuple(r.get(k) for k in ("unlearner", "check", "scenario", "profile", "budget"))
        seeds.setdefault(case, set()).add(r.get("seed"))
    pooled = sorted({s for group in seeds.values() if len(group) > 1 for s in group}, key=str)
    if pooled:
        raise BaselineError(
            f"{label}: written by an older unlearn-audit with one test per seed (seeds "
            f"{pooled}); tests now pool their seeds into one verdict, so its results cannot be matched; " + regenerate
        )


@lru_cache(maxsize=8)
def _cached(path: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return load_baseline(Path(path))


def failed_in(record: dict[str, Any]) -> bool:
    """Whether the check failed in a report's result, by its verdict where the report has one: so that the
    report of a gated CI run can serve as the next baseline, where the gate recorded a known failure as
    xfailed (verdict fail) and a regression as failed (verdict pass). A result without a verdict (a test
    that errored before it was judged) failed when its test failed or errored."""
    verdict = record.get("verdict")
    if verdict is not None:
        return bool(verdict == "fail")
    return record.get("outcome") in ("failed", "error")


def fixture_change(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any] | None:
    """How the fixture builds of two results differ, or None where they are the same or a report does not say."""
    now, before = builds_measured_on(new), builds_measured_on(old)
    if now is None or before is None:
        return None
    ids_now, ids_before = [b.fixture_id for b in now], [b.fixture_id for b in before]
    if ids_now == ids_before:
        return None
    return {
        "baseline": ids_before,
        "now": ids_now,
        "baseline_built_with": builders(before),
        "built_with": builders(now),
    }


def compare(new: dict[str, Any], old: dict[str, Any] | None, alpha: float = ALPHA) -> dict[str, Any]:
    """Regression verdict for one result; both arguments are report results (flat records).

    A result measured on another build of its fixture than the baseline's (another torch, CPU kernel or
    GPU trained other weights; `scenarios.provenance`) is not compared: the difference of its scores
    holds the fixture's change, which no standard error of either score covers, so a z-test would call
    it the method's. It is judged on its own verdict, with status `other fixture`.
    """
    if old is None:
        return {"regressed": False, "status": "new", "message": "not in the baseline"}
    judged = _compare_scores(new, old, alpha)
    changed = fixture_change(new, old)
    if changed is None:
        return judged
    return {
        **judged,
        "regressed": False,
        "status": "other fixture",
        "fixture": changed,
        "message": (
            "not compared with the baseline: it was measured on another build of this fixture (baseline built with "
            f"{'; '.join(changed['baseline_built_with'])}; this run's with {'; '.join(changed['built_with'])}). "
            + OTHER_FIXTURE_ADVICE
        ),
    }


OTHER_FIXTURE_ADVICE = (
    "Give both runs the same built fixtures (`unlearn-audit fixtures pack` and `unpack`, or one shared "
    "--audit-cache), or write the baseline again where the fixtures are built."
)


def other_fixture_summary(changes: list[dict[str, Any]], total: int) -> str:
    """One line on the results the gate did not compare because their fixtures differ (`changes`: their
    comparisons' `fixture` entries), for the end of a run and for `unlearn-audit compare`."""
    before = sorted({how for change in changes for how in change.get("baseline_built_with", [])})
    now = sorted({how for change in changes for how in change.get("built_with", [])})
    return (
        f"{len(changes)} of {total} result(s) were measured on other builds of their fixtures than the baseline's "
        f"and were not compared (the baseline's built with {'; '.join(before)}; these with {'; '.join(now)}). "
        + OTHER_FIXTURE_ADVICE
    )


def _compare_scores(new: dict[str, Any], old: dict[str, Any], alpha: float) -> dict[str, Any]:
    """The one-sided z-test of the module's docstring, on two results of the same fixture."""
    s_new, s_old = new.get("score"), old.get("score")
    se_new, se_old = new.get("stderr") or 0.0, old.get("stderr") or 0.0
    direction = new.get("direction") or old.get("direction") or "lower_is_better"
    rule = (
        f"regression if the score is worse than the baseline's by a one-sided z-test at alpha={alpha:g} "
        f"(se = sqrt(se_new^2 + se_old^2)); exact scores regress only when the verdict turns to fail"
    )
    out: dict[str, Any] = {
        "baseline_score": s_old,
        "baseline_stderr": old.get("stderr"),
        "baseline_outcome": old.get("outcome"),
        "baseline_failed": failed_in(old),
        "rule": rule,
    }
    if s_new is None or s_old is None:
        worse = old.get("outcome") == "passed" and new.get("outcome") in ("failed", "error")
        return {
            **out,
            "regressed": worse,
            "status": "regressed" if worse else "incomparable",
            "message": f"regression against baseline: outcome {old.get('outcome')} -> {new.get('outcome')}"
            if worse
            else "",
        }
    sign = 1.0 if direction == "lower_is_better" else -1.0
    worsening = sign * (s_new - s_old)
    se = math.sqrt(se_new**2 + se_old**2)
    turned_failing = old.get("outcome") == "passed" and new.get("outcome") in ("failed", "error")
    if se == 0:
        # Exact scores: no z-statistic (None, so the JSON report stays valid); only the verdict counts.
        z, p = None, (0.0 if worsening > 0 else 1.0)
        worse = worsening > 0 and turned_failing
    else:
        z = worsening / se
        p = float(st.norm.sf(z))
        # A verdict that turns from pass to fail is a regression even when the score moved the
        # other way (e.g. a GUS that overshoots to a strongly negative mean fails the two-sided test).
        worse = p < alpha or turned_failing
    status = "regressed" if worse else ("improved" if (se and -worsening / se > st.norm.isf(alpha)) else "same")
    zp = f"z = {z:.2f}, p = {p:.2g}" if z is not None else "exact score"
    message = (
        (
            f"regression against baseline: score {s_new:.4g} ± {se_new:.2g} vs baseline {s_old:.4g} ± {se_old:.2g} "
            f"({direction.replace('_', ' ')}; {zp}; outcome {old.get('outcome')} -> {new.get('outcome')})"
        )
        if worse
        else ""
    )
    return {**out, "regressed": worse, "status": status, "z": z, "p_value": p, "message": message}


def compare_with_baseline(record: ResultRecord, baseline_path: str) -> dict[str, Any]:
    """Compare one judged result with the same case in the baseline file."""
    flat = record.to_json()
    return compare(flat, _cached(baseline_path).get(key_of(flat)))


def compare_reports(old_path: Path, new_path: Path) -> list[dict[str, Any]]:
    """Every result of the new report next to the old one (for `unlearn-audit compare`)."""
    old = load_baseline(old_path, "old")
    new = load_baseline(new_path, "new")
    rows = []
    for key, r in sorted(new.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        rows.append(
            {
                **dict(zip(KEY_FIELDS, key)),
                "new_score": r.get("score"),
                "new_stderr": r.get("stderr"),
                "new_outcome": r.get("outcome"),
                **compare(r, old.get(key)),
            }
        )
    for key in sorted(set(old) - set(new), key=lambda k: tuple(str(x) for x in k)):
        rows.append(
            {**dict(zip(KEY_FIELDS, key)), "status": "missing", "regressed": False, "message": "only in the old report"}
        )
    return rows
