"""`unlearn-audit calibrate`: run the suite for the reference methods over several seeds and
tabulate verdicts, scores and power per (method, check, scenario).

This is the suite's self-test: `Retrain` must pass every pooled test and the negative controls
must fail every removal check. The run pools its seeds as a user's does (one test per method x
check x scenario); every seed's own verdict is in the report too, and each seed alone is an
independent one-seed run of the suite, so over N seeds the tables also give how often a one-seed
run fails `Retrain` somewhere (the suite-level false-failure rate) and the power of every check at
1 and 3 seeds. The tables are built from the JSON report, so they show what a user's run shows.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from unlearn_audit.jsonsafe import finite
from unlearn_audit.reports.record import ResultRecord, per_seed_records
from unlearn_audit.stats import wilson_interval
from unlearn_audit.tools.suite_run import suite_command

NEGATIVE_CONTROLS = ["NoOp", "FreshRandomModel", "RandomRelabelDestructive"]
"""Must fail every removal check: the poison kept (NoOp), or the model destroyed instead of cleaned."""

PARTIAL_CONTROLS = ["PartialRetrain1", "PartialRetrain3", "PartialRetrain25", "PartialRetrain50"]
"""Keep a known part of the poison: a check must fail them on the seeds where their excess is above its MDE
(with probability about 0.8 at the MDE, more beyond it)."""

REFERENCE_METHODS = [
    "Retrain",
    "NoOp",
    "FreshRandomModel",
    "RandomRelabelDestructive",
    "GradientDescent",
    "NoisyGradientDescent",
    "GradientAscent",
    "NegGradPlus",
    "ExactUnlearningK",
    "CatastrophicForgettingK",
    "SCRUB",
    "SalUn",
    "SSD",
    *PARTIAL_CONTROLS,
]


def run_suite(
    methods: list[str],
    profile: str,
    seeds: str,
    report: Path,
    cache: str | None,
    workers: int | None,
    select: str | None = None,
) -> int:
    """The local engine: one pytest run over every method and seed (`workers` xdist processes); pytest's
    exit code. `cache` is a directory or a URL, passed on as given."""
    return subprocess.call(suite_command(methods, profile, seeds, report, cache, select, workers))


def seed_results(doc: dict[str, Any]) -> list[ResultRecord]:
    """Every seed's own result (a pooled test's `per_seed`; a schema-1 report's results as they are)."""
    return [one for r in doc["results"] for one in per_seed_records(ResultRecord.from_json(r))]


def summarise(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (unlearner, check, scenario): per-seed pass counts, mean score and reference, the
    pooled test's outcome, and the power at 1 and 3 seeds."""
    groups: dict[tuple[str, str, str], list[ResultRecord]] = defaultdict(list)
    for one in seed_results(doc):
        groups[(str(one.unlearner), str(one.check), str(one.scenario))].append(one)
    tests: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in doc["results"]:
        tests[(r["unlearner"], r["check"], r["scenario"])].append(r)
    # One test per row pools its seeds; a schema-1 report (one test per seed) has no pooled verdict.
    pooled = {key: rs[0] for key, rs in tests.items() if len(rs) == 1}
    rows = []
    for (unlearner, check, scenario), rs in sorted(groups.items()):
        scores = [r.score for r in rs if r.score is not None]
        refs = [r.reference for r in rs if r.reference is not None]
        outcomes = [r.outcome for r in rs]
        whole = pooled.get((unlearner, check, scenario), {})
        rows.append(
            {
                "unlearner": unlearner.rpartition(":")[2],
                "check": check,
                "scenario": scenario,
                "seeds": len(rs),
                "passed": outcomes.count("passed"),
                "failed": outcomes.count("failed") + outcomes.count("error"),
                "skipped": outcomes.count("skipped") + outcomes.count("xfailed"),
                "score_mean": statistics.fmean(scores) if scores else None,
                "score_sd": statistics.stdev(scores) if len(scores) > 1 else None,
                "reference_mean": statistics.fmean(refs) if refs else None,
                "pooled_outcome": whole.get("outcome"),
                "pooled_seeds": len(whole.get("seeds") or [whole.get("seed")]),
                "power_1": power_at(rs, 1),
                "power_3": power_at(rs, 3),
            }
        )
    return rows


def power_at(results: list[ResultRecord], seeds: int) -> float | None:
    """The power against the unremoved poison of the check's test pooled over `seeds` seeds, averaged over
    the fixtures: for each seed's measured effect e, the power of a pooled test that sees e x sqrt(seeds)
    (at 1 seed, each seed's own stated power). An average of powers, not the power of an average effect,
    so that one fixture with a huge effect does not hide the weak ones."""
    from unlearn_audit.stats import z_power

    powers = []
    for r in results:
        d = r.details or {}
        if "power" not in d or d["power"] is None:
            continue
        effect = d.get("power_effect")
        if seeds == 1 or effect is None:  # None: infinite in JSON (certain, or none at all): the same at any seeds
            powers.append(float(d["power"]))
        else:
            powers.append(
                z_power(
                    effect * math.sqrt(seeds),
                    d.get("power_alpha", 0.01),
                    bool(d.get("power_two_sided")),
                    d.get("power_critical"),
                )
            )
    powers = [p for p in powers if not math.isnan(p)]
    return sum(powers) / len(powers) if powers else None


def _short(name: Any) -> str:
    return str(name).rpartition(":")[2]


def _judged_seeds(record: dict[str, Any]) -> list[tuple[int, str, dict[str, Any]]]:
    """(seed, verdict, evidence) of every judged seed of a pooled record (a one-seed record: itself)."""
    out = []
    for one in per_seed_records(ResultRecord.from_json(record)):
        ev = (one.details or {}).get("evidence")
        if one.verdict in ("pass", "fail") and isinstance(ev, dict) and one.seed is not None:
            out.append((one.seed, str(one.verdict), ev))
    return out


def _median(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else None


def mde_rows(doc: dict[str, Any], unlearner: str = "Retrain") -> list[dict[str, Any]]:
    """The minimal detectable effect of each (check, scenario) test at 1 and 3 seeds, from `unlearner`'s
    evidence (the reference populations do not depend on the method): each seed's own test, and the test
    pooled over consecutive triples of seeds (0-2, 3-5, ...), at the level the run judged it; medians over
    the seeds or triples, with how many had no detectable effect at all."""
    from unlearn_audit.checks.mde import minimal_detectable_effect

    rows = []
    for r in doc["results"]:
        if _short(r["unlearner"]) != unlearner or "alpha" not in (r.get("details") or {}):
            continue
        judged = _judged_seeds(r)
        if not judged:
            continue
        alpha = float(r["details"]["alpha"])
        ones = [minimal_detectable_effect([ev], alpha) for _, _, ev in judged]
        triples = [
            minimal_detectable_effect([ev for _, _, ev in judged[i : i + 3]], alpha)
            for i in range(0, len(judged) - 2, 3)
        ]
        if not any(ones):
            continue
        parts = sorted({p for m in ones if m is not None and m.parts for p in m.parts})
        per_part = {p: _median([m.parts[p] for m in ones if m is not None and m.parts and p in m.parts]) for p in parts}
        halves = [
            one.details.get("seeds_for_power_0.8_half_effect")
            for one in per_seed_records(ResultRecord.from_json(r))
            if one.details
        ]
        rows.append(
            {
                "check": r["check"],
                "scenario": r["scenario"],
                "unit": r.get("unit", ""),
                "alpha": alpha,
                "seeds": len(judged),
                "mde_1": _median([m.value for m in ones if m is not None]),
                "mde_1_none": sum(m is not None and math.isinf(m.value) for m in ones),
                "mde_3": _median([m.value for m in triples if m is not None]),
                "triples": len(triples),
                "mde_1_parts": per_part,
                "seeds_for_power_half_effect": _median([float(h) for h in halves if isinstance(h, (int, float))]),
            }
        )
    return sorted(rows, key=lambda r: (CHECK_ORDER.get(r["check"], 99), r["scenario"]))


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of strings."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _three_figures(v: Any, missing: str = "") -> str:
    return missing if v is None else f"{v:.3g}"


def mde_markdown(rows: list[dict[str, Any]]) -> str:
    """The MDE table: what residual each test detects with probability 0.8, at 1 and 3 seeds."""
    if not rows:
        return "The MDE table needs Retrain in the sweep (its evidence carries the fixtures' reference populations).\n"
    header = [
        "check",
        "scenario",
        "unit",
        "alpha",
        "MDE, 1 seed (median)",
        "MDE, 3 seeds pooled (median)",
        "by part, 1 seed",
        "seeds for power 0.8 against half the original's effect",
    ]
    table = []
    for r in rows:
        parts = ", ".join(f"{p}: {_three_figures(v, 'none')}" for p, v in r["mde_1_parts"].items())
        none = f" ({r['mde_1_none']} of {r['seeds']} seeds: none)" if r["mde_1_none"] else ""
        three = _three_figures(r["mde_3"], "none") if r["triples"] else "(fewer than 3 seeds)"
        half = r["seeds_for_power_half_effect"]
        table.append(
            [
                r["check"],
                r["scenario"],
                r["unit"],
                f"{r['alpha']:.3g}",
                _three_figures(r["mde_1"], "none") + none,
                three,
                parts,
                "" if half is None else f"{half:g}",
            ]
        )
    return _markdown_table(header, table)


def partial_control_rows(doc: dict[str, Any], controls: list[str] | None = None) -> list[dict[str, Any]]:
    """For each partial-removal control and test: on how many seeds its excess over the reference was above the
    test's MDE, and how many of those it failed (the stated power says about 0.8 of them at the MDE, more
    beyond); the same for the seeds below the MDE. For a test over several parts (relearning's k), a seed's
    excess is read at the part where it is largest relative to that part's MDE."""
    from unlearn_audit.checks.mde import minimal_detectable_effect, observed_excess

    wanted = set(controls or PARTIAL_CONTROLS)
    rows = []
    for r in doc["results"]:
        if _short(r["unlearner"]) not in wanted or "alpha" not in (r.get("details") or {}):
            continue
        alpha = float(r["details"]["alpha"])
        above = below = above_failed = below_failed = 0
        excesses, mdes = [], []
        for _, verdict, ev in _judged_seeds(r):
            mde = minimal_detectable_effect([ev], alpha)
            if mde is None:
                continue
            excess = observed_excess(ev)
            limits = mde.parts if mde.parts is not None else {"": mde.value}
            # excess / MDE per part; an infinite MDE (nothing detectable there) gives 0, a NaN excess is skipped
            ratios = {p: excess[p] / limits[p] for p in limits if p in excess and limits[p] > 0}
            ratios = {p: v for p, v in ratios.items() if not math.isnan(v)}
            if not ratios:
                continue
            part = max(ratios, key=lambda p: ratios[p])
            excesses.append(excess[part])
            mdes.append(limits[part])
            if excess[part] > limits[part]:
                above, above_failed = above + 1, above_failed + (verdict == "fail")
            else:
                below, below_failed = below + 1, below_failed + (verdict == "fail")
        if above + below:
            rows.append(
                {
                    "unlearner": _short(r["unlearner"]),
                    "check": r["check"],
                    "scenario": r["scenario"],
                    "excess_median": _median(excesses),
                    "mde_median": _median(mdes),
                    "above": above,
                    "above_failed": above_failed,
                    "below": below,
                    "below_failed": below_failed,
                    "pooled_outcome": r.get("outcome"),
                }
            )
    order = {m: i for i, m in enumerate(PARTIAL_CONTROLS)}
    return sorted(rows, key=lambda r: (order.get(r["unlearner"], 99), CHECK_ORDER.get(r["check"], 99), r["scenario"]))


def partial_control_markdown(rows: list[dict[str, Any]]) -> str:
    """The partial-removal table: per control and test, the seeds above and below the MDE and how many failed."""
    if not rows:
        return "No partial-removal controls in this sweep.\n"
    header = [
        "control",
        "check",
        "scenario",
        "excess (median)",
        "MDE (median)",
        "seeds above the MDE: failed",
        "seeds below: failed",
        "pooled test",
    ]
    table = [
        [
            r["unlearner"],
            r["check"],
            r["scenario"],
            _three_figures(r["excess_median"]),
            _three_figures(r["mde_median"]),
            f"{r['above_failed']}/{r['above']}",
            f"{r['below_failed']}/{r['below']}",
            str(r["pooled_outcome"]),
        ]
        for r in rows
    ]
    return _markdown_table(header, table)


def partial_control_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Tests weaker than they state: a control above the MDE on at least 4 seeds, failed on fewer than half."""
    return [
        f"{r['unlearner']} was above the MDE of {r['check']} on {r['scenario']} on {r['above']} seeds but failed only "
        f"{r['above_failed']}: the test is weaker than its stated MDE"
        for r in rows
        if r["above"] >= 4 and r["above_failed"] < r["above"] / 2
    ]


def suite_false_failures(doc: dict[str, Any], unlearner: str = "Retrain") -> dict[str, Any]:
    """How often `unlearner` fails at least one test of a one-seed run: each seed of the calibration is one
    independent such run (its per-seed verdicts are the verdicts that run would give)."""
    by_seed: dict[int, list[ResultRecord]] = defaultdict(list)
    for one in seed_results(doc):
        if str(one.unlearner).rpartition(":")[2] == unlearner and one.seed is not None:
            by_seed[one.seed].append(one)
    failing = sorted(seed for seed, rs in by_seed.items() if any(r.outcome in ("failed", "error") for r in rs))
    runs = len(by_seed)
    low, high = wilson_interval(len(failing), runs) if runs else (0.0, 1.0)
    pooled = [r for r in doc["results"] if str(r["unlearner"]).rpartition(":")[2] == unlearner]
    return {
        "unlearner": unlearner,
        "runs": runs,
        "failing_seeds": failing,
        "rate_interval_95": [low, high],
        "pooled_tests": len(pooled),
        "pooled_failed": sum(r["outcome"] in ("failed", "error") for r in pooled),
    }


def anchor_violations(rows: list[dict[str, Any]]) -> list[str]:
    """Where the calibration anchors disagree with the suite: a Retrain failure (expected at rate alpha per
    test), or a negative control passing a removal check on some seed (never expected)."""
    from unlearn_audit.checks import REMOVAL_CHECKS

    found = []
    for r in rows:
        where = f"{r['check']} on {r['scenario']}"
        if r["unlearner"] == "Retrain":
            if r["pooled_outcome"] in ("failed", "error"):
                found.append(f"Retrain failed the pooled test of {where}")
            elif r["pooled_outcome"] is None and r["failed"]:
                found.append(f"Retrain failed {where} on {r['failed']}/{r['seeds']} seeds")
        if r["unlearner"] in NEGATIVE_CONTROLS and r["check"] in REMOVAL_CHECKS:
            if r["pooled_outcome"] == "passed":
                found.append(f"negative control {r['unlearner']} passed the pooled test of {where}")
            elif r["pooled_outcome"] is None and r["passed"]:
                found.append(f"negative control {r['unlearner']} passed {where} on {r['passed']}/{r['seeds']} seeds")
    return found


def anchors_line(rows: list[dict[str, Any]]) -> str:
    """What the anchors of this sweep showed, naming only the anchors it ran."""
    violations = anchor_violations(rows)
    if violations:
        return "; ".join(violations)
    ran = {r["unlearner"] for r in rows}
    controls = [c for c in NEGATIVE_CONTROLS if c in ran]
    said = (["Retrain passes every test"] if "Retrain" in ran else []) + (
        [f"every negative control run ({', '.join(controls)}) fails every removal check"] if controls else []
    )
    missing = [a for a in ["Retrain", *NEGATIVE_CONTROLS] if a not in ran]
    if not said:
        return f"none in this sweep (add {', '.join(missing)} to --methods to calibrate against them)"
    return " and ".join(said) + (f"; not run: {', '.join(missing)}" if missing else "")


def seed_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Where a negative control passed a removal check on a seed alone although the pooled test failed it:
    not a violation (the pooled test is the verdict) but a sign of seeds with little power, worth showing."""
    from unlearn_audit.checks import REMOVAL_CHECKS

    return [
        f"{r['unlearner']} passed {r['check']} on {r['scenario']} on {r['passed']}/{r['seeds']} seeds alone "
        f"(power at 1 seed {r['power_1']:.2f}; the pooled test failed it)"
        for r in rows
        if r["unlearner"] in NEGATIVE_CONTROLS
        and r["check"] in REMOVAL_CHECKS
        and r["pooled_outcome"] in ("failed", "error")
        and r["passed"]
        and r["power_1"] is not None
    ]


def markdown(rows: list[dict[str, Any]]) -> str:
    def num(v: Any) -> str:
        if v is None:
            return ""
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3f}"

    lines = [
        "| method | check | scenario | seeds passed alone | pooled test | score (mean ± sd over seeds) | reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = f"{r['passed']}/{r['seeds']}" + (f" ({r['skipped']} skipped)" if r["skipped"] else "")
        score = num(r["score_mean"]) + (f" ± {num(r['score_sd'])}" if r["score_sd"] is not None else "")
        lines.append(
            f"| {r['unlearner']} | {r['check']} | {r['scenario']} | {verdict} | {r['pooled_outcome']} | {score} | "
            f"{num(r['reference_mean'])} |"
        )
    return "\n".join(lines) + "\n"


def power_markdown(rows: list[dict[str, Any]]) -> str:
    """The power of each (check, scenario) against the unremoved poison, at 1 and 3 seeds (from Retrain's
    rows: the power depends on the fixture, not on the method)."""
    measured = [r for r in rows if r["unlearner"] == "Retrain" and r["power_1"] is not None]
    if not measured:
        return "The power table needs Retrain in the sweep (its rows carry the fixtures' power).\n"
    lines = ["| check | scenario | power, 1 seed | power, 3 seeds |", "|---|---|---|---|"]
    for r in sorted(measured, key=lambda r: (CHECK_ORDER.get(r["check"], 99), r["scenario"])):
        lines.append(f"| {r['check']} | {r['scenario']} | {r['power_1']:.2f} | {r['power_3']:.2f} |")
    return "\n".join(lines) + "\n"


def false_failure_markdown(summary: dict[str, Any]) -> str:
    if not summary["runs"]:
        return f"No {summary['unlearner']} runs in this sweep: its suite-level false-failure rate is not measured.\n"
    low, high = summary["rate_interval_95"]
    failing = ", ".join(map(str, summary["failing_seeds"])) or "none"
    return (
        f"{summary['unlearner']} failed at least one test on {len(summary['failing_seeds'])} of {summary['runs']} "
        f"one-seed runs (seeds failing: {failing}; 95% Wilson interval of the rate {low:.3f}-{high:.3f}); "
        f"pooled over all seeds it failed {summary['pooled_failed']} of {summary['pooled_tests']} tests.\n"
    )


def matrix_markdown(rows: list[dict[str, Any]]) -> str:
    """Compact scoreboard: one row per method, one column per (check, scenario): seeds passed alone / seeds
    judged, the pooled test's verdict (the suite's verdict), (mean score; seeds left out because their
    fixture failed validation)."""
    columns = sorted({(r["check"], r["scenario"]) for r in rows}, key=lambda c: (CHECK_ORDER.get(c[0], 99), c[1]))
    methods = sorted({r["unlearner"] for r in rows}, key=lambda m: (METHOD_ORDER.get(m, 99), m))
    cell = {(r["unlearner"], r["check"], r["scenario"]): r for r in rows}
    head = "| method | " + " | ".join(f"{c} ({sc})" for c, sc in columns) + " |"
    lines = [head, "|---" * (len(columns) + 1) + "|"]
    for m in methods:
        parts = []
        for c, sc in columns:
            r = cell.get((m, c, sc))
            if r is None:
                parts.append("")
            elif r["skipped"] == r["seeds"]:
                parts.append("exempt")
            else:
                mean = r["score_mean"]
                shown = "" if mean is None else (f" ({mean:.0f})" if abs(mean) >= 100 else f" ({mean:.2f})")
                judged = r["seeds"] - r["skipped"]  # a seed whose fixture failed validation is left out (xfail)
                pooled = {"passed": " pass", "failed": " fail", "error": " error"}.get(
                    r.get("pooled_outcome") or "", ""
                )
                left_out = f"; {r['skipped']} left out" if r["skipped"] else ""
                shown = shown[:-1] + left_out + ")" if shown else (f" ({left_out[2:]})" if left_out else "")
                parts.append(f"{r['passed']}/{judged}{pooled}{shown}")
        lines.append(f"| {m} | " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


CHECK_ORDER = {
    "gaussian_leakage": 0,
    "targeted_removed": 1,
    "relearning_resistant": 2,
    "not_mode_connected": 3,
    "utility_preserved": 4,
    "budget_respected": 5,
}
METHOD_ORDER = {
    m: i
    for i, m in enumerate(
        REFERENCE_METHODS
        + ["WeightDistortion", "AlternatingSCRUB", "WeightDistReg", "CBFT", "WeightDistRegSGD", "CBFTSGD"]
    )
}


def print_scoreboard(rows: list[dict[str, Any]]) -> None:
    """The scoreboard as a rich table on the terminal (passed/seeds, mean score; red where none passed)."""
    from rich.table import Table

    from unlearn_audit.tools.consoles import output_console

    lines = matrix_markdown(rows).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    table = Table(title="unlearn-audit calibration: seeds passed alone / judged, pooled verdict (mean score)")
    for h in header:
        table.add_column(h.replace(" (", "\n("), justify="left" if h == "method" else "right", no_wrap=h == "method")
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        styled = [cells[0]] + [f"[red]{c}[/]" if " fail" in c or " error" in c else c for c in cells[1:]]
        table.add_row(*styled)
    output_console().print(table)


class CalibrationError(RuntimeError):
    """The sweep has no report to tabulate; the message says why. Nothing is written then."""


DEFAULT_PROFILE = "tiny"


def main(args: Any) -> int:
    out = Path(args.out)
    started = time.perf_counter()
    try:
        if args.from_report:
            report = Path(args.from_report)
            doc = read_report(report)
            profile = report_profile(doc, report, args.profile)
        else:
            profile = args.profile or DEFAULT_PROFILE
            report = out / f"calibration-{profile}.json"
            run_sweep(args, profile, report)
            doc = read_report(report)
    except CalibrationError as exc:
        print(f"unlearn-audit calibrate: {exc}", file=sys.stderr)
        return 2
    write_tables(doc, out, profile)
    print(f"calibration of profile {profile}: {time.perf_counter() - started:.0f} s; written to {out}/")
    return 0


def run_sweep(args: Any, profile: str, report: Path) -> None:
    """Run the sweep into `report`, or raise CalibrationError. A report left by an earlier sweep is never read
    as this one's: the local engine writes to a fresh file that replaces it only once pytest has audited."""
    report.parent.mkdir(parents=True, exist_ok=True)
    methods = args.methods or REFERENCE_METHODS
    if getattr(args, "engine", "local") == "ray":
        from unlearn_audit.tools.ray_engine import RayUnavailable
        from unlearn_audit.tools.ray_engine import run_sweep as run_ray_sweep

        try:
            status = run_ray_sweep(
                methods,
                profile,
                args.seeds,
                report,
                args.cache,
                address=args.address,
                select=args.select,
                gpus_per_cell=args.gpus_per_cell,
            )
        except RayUnavailable as exc:
            raise CalibrationError(str(exc)) from None
        if status:
            raise CalibrationError("the Ray sweep did not audit every cell (see above); no tables written")
        return
    fresh = report.with_name(report.stem + ".running.json")
    fresh.unlink(missing_ok=True)
    status = run_suite(methods, profile, args.seeds, fresh, args.cache, args.workers, getattr(args, "select", None))
    if status not in SUITE_RAN:
        fresh.unlink(missing_ok=True)
        raise CalibrationError(
            f"the suite did not run (pytest exit {status}: {SUITE_EXIT_CODES.get(status, 'killed or crashed')}; "
            "its message is above); no tables written"
        )
    if not fresh.is_file():
        raise CalibrationError(f"pytest exit {status} but it wrote no report; no tables written")
    fresh.replace(report)
    print(f"unlearn-audit calibrate: the sweep's JSON report is {report}")


SUITE_RAN = (0, 1)
"""pytest exit codes of a sweep that audited: 1 only says some checks failed, as the negative controls must."""

SUITE_EXIT_CODES = {2: "interrupted", 3: "internal error", 4: "usage error", 5: "no tests collected"}


def read_report(report: Path) -> dict[str, Any]:
    """The JSON report at `report`, or CalibrationError saying what is wrong with it."""
    if not report.is_file():
        raise CalibrationError(f"no such report: {report}")
    try:
        doc = json.loads(report.read_text())
        doc["results"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CalibrationError(f"{report}: not an unlearn-audit JSON report ({exc})") from None
    return doc


def report_profile(doc: dict[str, Any], report: Path, asked: str | None) -> str:
    """The profile a report was run on (its options; else its results'), which names the tables; `--profile`
    may only repeat it, since tables named after another profile would misstate what was measured."""
    found = (doc.get("options") or {}).get("profile") or next(
        (r.get("profile") for r in doc["results"] if r.get("profile")), None
    )
    if found and asked and asked != found:
        raise CalibrationError(f"{report} is a report of profile {found!r}, not {asked!r} (leave out --profile)")
    return str(found or asked or DEFAULT_PROFILE)


def write_tables(doc: dict[str, Any], out: Path, profile: str) -> None:
    """Write `calibration-<profile>.md` and `.summary.json` into `out` (replacing earlier ones) and print them."""
    rows = summarise(doc)
    md = markdown(rows)
    matrix = matrix_markdown(rows)
    power = power_markdown(rows)
    mdes = mde_rows(doc)
    partial = partial_control_rows(doc)
    retrain = suite_false_failures(doc)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"calibration-{profile}.md").write_text(
        "\n".join(
            [
                matrix,
                md,
                power,
                mde_markdown(mdes),
                partial_control_markdown(partial),
                false_failure_markdown(retrain),
            ]
        )
    )
    (out / f"calibration-{profile}.summary.json").write_text(
        json.dumps(finite({"rows": rows, "mde": mdes, "partial_controls": partial, "retrain_suite": retrain}), indent=2)
    )
    print_scoreboard(rows)
    print(power, end="")
    print(mde_markdown(mdes), end="")
    print(partial_control_markdown(partial), end="")
    print(false_failure_markdown(retrain), end="")
    for note in seed_notes(rows) + partial_control_notes(partial):
        print("note: " + note)
    print("calibration anchors: " + anchors_line(rows))
