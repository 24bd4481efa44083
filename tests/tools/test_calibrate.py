"""`unlearn-audit calibrate`: tabulating a report (the suite run itself is covered by the plugin tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearn_audit.tools.calibrate import (
    anchor_violations,
    anchors_line,
    matrix_markdown,
    power_markdown,
    seed_notes,
    suite_false_failures,
    summarise,
)
from unlearn_audit.tools.cli import main


def rec(unlearner, check, scenario, seed, outcome, score):
    return {
        "unlearner": f"unlearn_audit.methods:{unlearner}",
        "check": check,
        "scenario": scenario,
        "seed": seed,
        "outcome": outcome,
        "score": score,
        "reference": 0.0,
    }


REPORT = {
    "schema_version": 1,
    "results": [
        rec("Retrain", "gaussian_leakage", "gaussian", 0, "passed", 0.01),
        rec("Retrain", "gaussian_leakage", "gaussian", 1, "passed", -0.03),
        rec("NoOp", "gaussian_leakage", "gaussian", 0, "failed", 0.8),
        rec("NoOp", "gaussian_leakage", "gaussian", 1, "failed", 0.7),
        rec("Retrain", "budget_respected", "gaussian", 0, "skipped", 40000.0),
        rec("Retrain", "budget_respected", "gaussian", 1, "skipped", 40000.0),
    ],
}


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
    bad = {
        "schema_version": 1,
        "results": REPORT["results"]
        + [
            rec("FreshRandomModel", "not_mode_connected", "gaussian", 0, "passed", 1.0),
            rec("FreshRandomModel", "utility_preserved", "gaussian", 0, "failed", 0.1),
            rec("Retrain", "relearning_resistant", "gaussian", 0, "failed", 0.5),
        ],
    }
    assert anchor_violations(summarise(bad)) == [
        "negative control FreshRandomModel passed the pooled test of not_mode_connected on gaussian",
        "Retrain failed the pooled test of relearning_resistant on gaussian",
    ]


def test_the_anchors_line_names_only_the_anchors_the_sweep_ran() -> None:
    methods = {r["unlearner"].rpartition(":")[2] for r in REPORT["results"]}
    assert "Retrain" in methods and "NoOp" in methods
    line = anchors_line(summarise(REPORT))
    assert line.startswith("Retrain passes every test and every negative control run (NoOp")
    without = {
        "schema_version": 1,
        "results": [r for r in REPORT["results"] if not r["unlearner"].endswith(("Retrain", "NoOp"))],
    }
    rows = summarise(without)
    assert anchors_line(rows).startswith("none in this sweep (add Retrain, NoOp")
    assert "needs Retrain" in power_markdown(rows) and "|" not in power_markdown(rows)
    assert "not measured" in false_failure_markdown_of(without)


def false_failure_markdown_of(doc: dict) -> str:
    from unlearn_audit.tools.calibrate import false_failure_markdown

    return false_failure_markdown(suite_false_failures(doc))


def test_cli_from_report_writes_markdown_and_json(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    report.write_text(json.dumps(REPORT))
    assert main(["calibrate", "--from-report", str(report), "--out", str(tmp_path / "out")]) == 0
    assert "NoOp" in (tmp_path / "out" / "calibration-tiny.md").read_text()
    assert json.loads((tmp_path / "out" / "calibration-tiny.summary.json").read_text())


def pooled(unlearner, check, scenario, outcome, seeds, power_effect=2.0):
    """A schema-2 result: one test pooling its seeds, each seed's own verdict in `per_seed`."""
    verdicts = {"passed": "pass", "failed": "fail"}
    per_seed = [
        {
            "seed": i,
            "verdict": verdicts[o],
            "score": sc,
            "stderr": 0.1,
            "reference": 0.0,
            "reference_stderr": 0.1,
            "details": {
                "power": 0.5,
                "power_effect": power_effect,
                "power_alpha": 0.01,
                "power_two_sided": False,
                "power_critical": None,
            },
        }
        for i, (o, sc) in enumerate(seeds)
    ]
    return {
        "unlearner": f"unlearn_audit.methods:{unlearner}",
        "check": check,
        "scenario": scenario,
        "seed": None,
        "seeds": list(range(len(seeds))),
        "outcome": outcome,
        "score": 0.0,
        "reference": 0.0,
        "details": {"per_seed": per_seed},
    }


POOLED = {
    "schema_version": 2,
    "results": [
        pooled(
            "Retrain", "gaussian_leakage", "gaussian", "passed", [("passed", 0.0), ("failed", 0.3), ("passed", 0.1)]
        ),
        pooled("Retrain", "utility_preserved", "gaussian", "passed", [("passed", 0.9)] * 3),
        pooled("NoOp", "gaussian_leakage", "gaussian", "failed", [("failed", 0.8), ("passed", 0.2), ("failed", 0.7)]),
    ],
}


def test_pooled_report_rows_have_seed_counts_pooled_outcome_and_power() -> None:
    rows = {(r["unlearner"], r["check"]): r for r in summarise(POOLED)}
    retrain = rows[("Retrain", "gaussian_leakage")]
    assert (retrain["passed"], retrain["failed"], retrain["pooled_outcome"], retrain["pooled_seeds"]) == (
        2,
        1,
        "passed",
        3,
    )
    from unlearn_audit.stats import z_power

    assert retrain["power_1"] == 0.5 and retrain["power_3"] == pytest.approx(z_power(2.0 * 3**0.5, 0.01))
    # The pooled tests decide: Retrain passed its pooled test, NoOp failed its pooled test; NoOp's pass on a
    # seed alone is a note on that seed's power, not a violation.
    assert anchor_violations(summarise(POOLED)) == []
    assert seed_notes(summarise(POOLED)) == [
        "NoOp passed gaussian_leakage on gaussian on 1/3 seeds alone (power at 1 seed 0.50; the pooled test failed it)"
    ]
    table = matrix_markdown(summarise(POOLED))
    assert "| Retrain | 2/3 pass (" in table and "| NoOp | 1/3 fail (" in table  # alone / judged, then the verdict


def test_a_seed_left_out_is_not_counted_as_judged() -> None:
    rows = summarise(
        {
            "schema_version": 1,
            "results": [
                rec("Retrain", "targeted_removed", "witches_brew", 0, "passed", 0.2),
                rec("Retrain", "targeted_removed", "witches_brew", 1, "xfailed", None),
            ],
        }
    )
    assert "| Retrain | 1/1 (0.20; 1 left out) |" in matrix_markdown(rows)


def test_suite_false_failures_count_one_seed_runs() -> None:
    summary = suite_false_failures(POOLED)
    assert summary["runs"] == 3 and summary["failing_seeds"] == [1] and summary["pooled_failed"] == 0
    low, high = summary["rate_interval_95"]
    assert 0 < low < 1 / 3 < high < 1


def pooled_record(unlearner: str, seeds: list[tuple[int, str, dict]], alpha: float = 0.0025) -> dict:
    """A pooled (schema-3-like) record of gaussian_leakage with each seed's own verdict and evidence."""
    return {
        "unlearner": f"unlearn_audit.methods:{unlearner}",
        "check": "gaussian_leakage",
        "scenario": "gaussian",
        "seed": None,
        "seeds": [s for s, _, _ in seeds],
        "outcome": "failed" if any(v == "fail" for _, v, _ in seeds) else "passed",
        "unit": "z-score",
        "details": {
            "alpha": alpha,
            "per_seed": [
                {
                    "seed": s,
                    "verdict": v,
                    "score": ev["sum"] / ev["n"],
                    "stderr": ev["n"] ** -0.5,
                    "reference": 0.0,
                    "reference_stderr": None,
                    "details": {"evidence": ev, "seeds_for_power_0.8_half_effect": 2},
                }
                for s, v, ev in seeds
            ],
        },
    }


def test_mde_table_at_one_seed_and_pooled_triples() -> None:
    from unlearn_audit.checks.evidence import unit_normal
    from unlearn_audit.tools.calibrate import mde_markdown, mde_rows

    seeds = [(s, "pass", unit_normal(0.0, 150)) for s in range(6)]
    (row,) = mde_rows({"results": [pooled_record("Retrain", seeds)]})
    assert row["seeds"] == 6 and row["triples"] == 2 and row["unit"] == "z-score"
    assert row["mde_1"] == pytest.approx(0.316, abs=0.002)
    assert row["mde_3"] == pytest.approx(0.316 / 3**0.5, abs=0.002)  # three seeds pooled: 450 scores
    assert row["seeds_for_power_half_effect"] == 2
    assert "| gaussian_leakage | gaussian | z-score | 0.0025 | 0.316 | 0.182 |" in mde_markdown([row])


def test_partial_controls_are_counted_above_and_below_the_mde() -> None:
    from unlearn_audit.checks.evidence import unit_normal
    from unlearn_audit.tools.calibrate import partial_control_markdown, partial_control_notes, partial_control_rows

    n = 150
    seeds = [
        (0, "fail", unit_normal(0.45 * n, n)),  # above the MDE 0.316, failed
        (1, "fail", unit_normal(0.40 * n, n)),
        (2, "pass", unit_normal(0.20 * n, n)),  # below it
    ]
    (row,) = partial_control_rows({"results": [pooled_record("PartialRetrain50", seeds)]})
    assert (row["above"], row["above_failed"], row["below"], row["below_failed"]) == (2, 2, 1, 0)
    assert row["excess_median"] == pytest.approx(0.40) and row["mde_median"] == pytest.approx(0.316, abs=0.002)
    assert "| PartialRetrain50 | gaussian_leakage | gaussian | 0.4 | 0.316 | 2/2 | 0/1 |" in partial_control_markdown(
        [row]
    )
    assert partial_control_notes([row]) == []
    weak = [(s, "pass", unit_normal(0.5 * n, n)) for s in range(4)]
    (bad,) = partial_control_rows({"results": [pooled_record("PartialRetrain50", weak)]})
    assert "weaker than its stated MDE" in partial_control_notes([bad])[0]


def fake_suite(monkeypatch: pytest.MonkeyPatch, status: int, doc: dict | None) -> list[list[str]]:
    """Replace the sweep's pytest run: record its command, write `doc` as its report (None: none), exit `status`."""
    import unlearn_audit.tools.calibrate as calibrate

    calls: list[list[str]] = []

    def call(cmd: list[str]) -> int:
        calls.append(cmd)
        if doc is not None:
            Path(cmd[cmd.index("--audit-report") + 1]).write_text(json.dumps(doc))
        return status

    monkeypatch.setattr(calibrate.subprocess, "call", call)
    return calls


@pytest.mark.parametrize("cache", ["http://127.0.0.1:8765", "s3://bucket/prefix"])
def test_a_cache_url_reaches_the_suite_as_a_url(
    cache: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    calls = fake_suite(monkeypatch, 1, REPORT)
    assert main(["calibrate", "--cache", cache, "--methods", "NoOp", "--out", "out"]) == 0
    command = calls[0]
    assert command[command.index("--audit-cache") + 1] == cache
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no local folder named after the URL


def test_a_local_cache_path_still_reaches_the_suite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_suite(monkeypatch, 0, REPORT)
    assert main(["calibrate", "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "out")]) == 0
    assert calls[0][calls[0].index("--audit-cache") + 1] == str(tmp_path / "c")


def test_the_ray_engine_gives_its_cells_the_cache_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import unlearn_audit.tools.ray_engine as ray_engine

    seen = []

    def run_cells(cells, address, gpus, log):  # noqa: ANN001, ANN202
        seen.extend(cells)
        return [ray_engine.CellResult(c, 4, None, "usage error", 0.0, "node") for c in cells]

    monkeypatch.setattr(ray_engine, "run_cells", run_cells)
    argv = ["calibrate", "--engine", "ray", "--cache", "s3://bucket/prefix", "--methods", "NoOp", "--seeds", "2"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2  # a cell that did not audit: no tables
    assert [(c.cache, c.seed) for c in seen] == [("s3://bucket/prefix", 0), ("s3://bucket/prefix", 1)]
    assert not list((tmp_path / "out").glob("*.md"))


def test_a_suite_that_did_not_run_writes_nothing_and_leaves_the_old_report_unread(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "calibration-tiny.json").write_text(json.dumps(REPORT))  # an earlier sweep's
    (out / "calibration-tiny.md").write_text("earlier tables")
    argv = ["calibrate", "--methods", "NoSuchMethod", "-k", "tiny-gaussian-", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the suite did not run (pytest exit 4: usage error" in err
    assert (out / "calibration-tiny.md").read_text() == "earlier tables"
    assert not (out / "calibration-tiny.summary.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["calibration-tiny.json", "calibration-tiny.md"]


@pytest.mark.parametrize(("status", "doc"), [(5, {"results": []}), (3, None), (0, None)])
def test_no_tests_an_internal_error_or_no_report_is_an_error(
    status: int, doc: dict | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    fake_suite(monkeypatch, status, doc)
    assert main(["calibrate", "--out", str(tmp_path / "out")]) == 2
    assert f"pytest exit {status}" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []


def test_failing_checks_are_a_calibration_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_suite(monkeypatch, 1, REPORT)  # NoOp fails its checks: pytest exits 1
    assert main(["calibrate", "--out", str(tmp_path / "out")]) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["calibration-tiny.json", "calibration-tiny.md", "calibration-tiny.summary.json"]


def test_from_report_names_the_tables_after_the_reports_profile(tmp_path: Path, capsys) -> None:
    report = tmp_path / "r.json"
    report.write_text(json.dumps({**REPORT, "options": {"profile": "text"}}))
    out = tmp_path / "out"
    assert main(["calibrate", "--from-report", str(report), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["calibration-text.md", "calibration-text.summary.json"]
    assert main(["calibrate", "--from-report", str(report), "--profile", "text", "--out", str(out)]) == 0
    assert main(["calibrate", "--from-report", str(report), "--profile", "tiny", "--out", str(tmp_path / "o2")]) == 2
    assert "is a report of profile 'text', not 'tiny'" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_from_report_of_a_missing_or_broken_file_says_so(tmp_path: Path, capsys) -> None:
    assert main(["calibrate", "--from-report", str(tmp_path / "nosuch.json"), "--out", str(tmp_path / "o")]) == 2
    assert f"no such report: {tmp_path / 'nosuch.json'}" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{")
    assert main(["calibrate", "--from-report", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o")]) == 2
    assert "not an unlearn-audit JSON report" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
