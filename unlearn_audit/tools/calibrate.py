"""`unlearn-audit calibrate`: run the suite for the reference methods over several seeds and
tabulate pass rates and scores per (method, check, scenario).

This is the suite's self-test: `Retrain` must pass every calibrated check and `NoOp` must fail
every removal check. The table is built from the JSON report, so it shows exactly what a
user's own run would show.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

NEGATIVE_CONTROLS = ["NoOp", "FreshRandomModel", "RandomRelabelDestructive"]
"""Must fail every removal check: the poison kept (NoOp), or the model destroyed instead of cleaned."""

REFERENCE_METHODS = [
    "Retrain", "NoOp", "FreshRandomModel", "RandomRelabelDestructive", "GradientDescent", "NoisyGradientDescent", "GradientAscent", "NegGradPlus",
    "ExactUnlearningK", "CatastrophicForgettingK", "SCRUB", "SalUn", "SSD",
]


def run_suite(methods: list[str], profile: str, seeds: int, report: Path, cache: Path | None, workers: int | None) -> int:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--audit-profile", profile,
           "--audit-seeds", str(seeds), "--audit-report", str(report)]
    for m in methods:
        cmd += ["--unlearner", m if ":" in m else f"unlearn_audit.methods:{m}"]
    if cache:
        cmd += ["--audit-cache", str(cache)]
    if workers:
        cmd += ["-n", str(workers)]
    return subprocess.call(cmd)


def summarise(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (unlearner, check, scenario): pass count, seeds, mean score and reference."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in doc["results"]:
        groups[(r["unlearner"], r["check"], r["scenario"])].append(r)
    rows = []
    for (unlearner, check, scenario), rs in sorted(groups.items()):
        scores = [r["score"] for r in rs if r["score"] is not None]
        refs = [r["reference"] for r in rs if r["reference"] is not None]
        outcomes = [r["outcome"] for r in rs]
        rows.append({
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
        })
    return rows


def anchor_violations(rows: list[dict[str, Any]]) -> list[str]:
    """Where the calibration anchors disagree with the suite: a Retrain failure (expected at rate alpha per
    test), or a negative control passing a removal check on some seed (never expected)."""
    from unlearn_audit.checks import REMOVAL_CHECKS

    found = []
    for r in rows:
        where = f"{r['check']} on {r['scenario']}"
        if r["unlearner"] == "Retrain" and r["failed"]:
            found.append(f"Retrain failed {where} on {r['failed']}/{r['seeds']} seeds")
        if r["unlearner"] in NEGATIVE_CONTROLS and r["check"] in REMOVAL_CHECKS and r["passed"]:
            found.append(f"negative control {r['unlearner']} passed {where} on {r['passed']}/{r['seeds']} seeds")
    return found


def markdown(rows: list[dict[str, Any]]) -> str:
    def num(v: Any) -> str:
        if v is None:
            return ""
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3f}"

    lines = ["| method | check | scenario | passed | score (mean ± sd over seeds) | retrain reference |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        verdict = f"{r['passed']}/{r['seeds']}" + (f" ({r['skipped']} skipped)" if r["skipped"] else "")
        score = num(r["score_mean"]) + (f" ± {num(r['score_sd'])}" if r["score_sd"] is not None else "")
        lines.append(f"| {r['unlearner']} | {r['check']} | {r['scenario']} | {verdict} | {score} | {num(r['reference_mean'])} |")
    return "\n".join(lines) + "\n"


def matrix_markdown(rows: list[dict[str, Any]]) -> str:
    """Compact scoreboard: one row per method, one column per (check, scenario): passed/seeds (mean score)."""
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
                parts.append(f"{r['passed']}/{r['seeds']}{shown}")
        lines.append(f"| {m} | " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


CHECK_ORDER = {"gaussian_leakage": 0, "targeted_removed": 1, "relearning_resistant": 2, "not_mode_connected": 3,
               "utility_preserved": 4, "budget_respected": 5}
METHOD_ORDER = {m: i for i, m in enumerate(REFERENCE_METHODS + ["WeightDistortion", "WeightDistReg", "CBFT"])}


def print_scoreboard(rows: list[dict[str, Any]]) -> None:
    """The scoreboard as a rich table on the terminal (passed/seeds, mean score; red where none passed)."""
    from rich.console import Console
    from rich.table import Table

    lines = matrix_markdown(rows).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    table = Table(title="unlearn-audit calibration: seeds passed (mean score)")
    for h in header:
        table.add_column(h.replace(" (", "\n("), justify="left" if h == "method" else "right", no_wrap=h == "method")
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        styled = [cells[0]] + [f"[red]{c}[/]" if c.startswith("0/") else c for c in cells[1:]]
        table.add_row(*styled)
    Console().print(table)


def main(args: Any) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = out / f"calibration-{args.profile}.json"
    started = time.perf_counter()
    if not args.from_report:
        run_suite(args.methods or REFERENCE_METHODS, args.profile, args.seeds, report, args.cache, args.workers)
    else:
        report = Path(args.from_report)
    if not report.is_file():
        print(f"no report at {report}: the suite did not run", file=sys.stderr)
        return 2
    doc = json.loads(report.read_text())
    rows = summarise(doc)
    md = markdown(rows)
    matrix = matrix_markdown(rows)
    (out / f"calibration-{args.profile}.md").write_text(matrix + "\n" + md)
    (out / f"calibration-{args.profile}.summary.json").write_text(json.dumps(rows, indent=2))
    print_scoreboard(rows)
    violations = anchor_violations(rows)
    print("calibration anchors: " + ("Retrain passes every test and every negative control "
                                     f"({', '.join(NEGATIVE_CONTROLS)}) fails every removal check" if not violations
                                     else "; ".join(violations)))
    print(f"calibration of profile {args.profile}: {time.perf_counter() - started:.0f} s; written to {out}/")
    return 0
