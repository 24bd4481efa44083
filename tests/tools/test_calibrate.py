"""`unlearn-audit calibrate`: tabulating a report (the suite run itself is covered by the plugin tests)."""

from __future__ import annotations

import json
from pathlib import Path

from unlearn_audit.tools.calibrate import anchor_violations, matrix_markdown, summarise
from unlearn_audit.tools.cli import main


def rec(unlearner, check, scenario, seed, outcome, score):
    return {"unlearner": f"unlearn_audit.methods:{unlearner}", "check": check, "scenario": scenario, "seed": seed,
            "outcome": outcome, "score": score, "reference": 0.0}


REPORT = {"schema_version": 1, "results": [
    rec("Retrain", "gaussian_leakage", "gaussian", 0, "passed", 0.01),
    rec("Retrain", "gaussian_leakage", "gaussian", 1, "passed", -0.03),
    rec("NoOp", "gaussian_leakage", "gaussian", 0, "failed", 0.8),
    rec("NoOp", "gaussian_leakage", "gaussian", 1, "failed", 0.7),
    rec("Retrain", "budget_respected", "gaussian", 0, "skipped", 40000.0),
    rec("Retrain", "budget_respected", "gaussian", 1, "skipped", 40000.0),
]}


def test_summary_counts_and_means() -> None:
    rows = {(r["unlearner"], r["check"]): r for r in summarise(REPORT)}
    noop = rows[("NoOp", "gaussian_leakage")]
    assert (noop["passed"], noop["failed"], noop["seeds"]) == (0, 2, 2) and abs(noop["score_mean"] - 0.75) < 1e-9
    assert rows[("Retrain", "gaussian_leakage")]["passed"] == 2
    table = matrix_markdown(summarise(REPORT))
    assert "| Retrain | 2/2 (-0.01) | exempt |" in table and "| NoOp | 0/2 (0.75) |" in table
    assert table.index("Retrain") < table.index("NoOp")  # calibration anchors first


def test_anchor_violations_name_a_passing_negative_control_and_a_failing_retrain() -> None:
    assert anchor_violations(summarise(REPORT)) == []
    bad = {"schema_version": 1, "results": REPORT["results"] + [
        rec("FreshRandomModel", "not_mode_connected", "gaussian", 0, "passed", 1.0),
        rec("FreshRandomModel", "utility_preserved", "gaussian", 0, "failed", 0.1),
        rec("Retrain", "relearning_resistant", "gaussian", 0, "failed", 0.5),
    ]}
    assert anchor_violations(summarise(bad)) == [
        "negative control FreshRandomModel passed not_mode_connected on gaussian on 1/1 seeds",
        "Retrain failed relearning_resistant on gaussian on 1/1 seeds",
    ]


def test_cli_from_report_writes_markdown_and_json(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    report.write_text(json.dumps(REPORT))
    assert main(["calibrate", "--from-report", str(report), "--out", str(tmp_path / "out")]) == 0
    assert "NoOp" in (tmp_path / "out" / "calibration-tiny.md").read_text()
    assert json.loads((tmp_path / "out" / "calibration-tiny.summary.json").read_text())
