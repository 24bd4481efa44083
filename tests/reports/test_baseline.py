"""The regression gate: --audit-baseline / --audit-update-baseline and `unlearn-audit compare`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from unlearn_audit.reports.baseline import compare
from unlearn_audit.tools.cli import main as cli_main

METHOD = textwrap.dedent(
    '''
    import dataclasses, os
    from unlearn_audit.training.loops import train

    class ShortRetrain:
        """Retrain from scratch; with MAKE_IT_WORSE set, for only 3 of the recipe's epochs."""
        def unlearn(self, model, request):
            epochs = 3 if os.environ.get("MAKE_IT_WORSE") else request.recipe.epochs
            return train(request.model_factory(), request.retain, request.recipe, generator=request.generator,
                         epochs=epochs, device=request.device)
    '''
)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--unlearner", "mymethod:ShortRetrain", "-k", "utility and gaussian", *args)


def test_same_method_passes_its_own_baseline_and_a_worse_one_fails(
    pytester: pytest.Pytester, audit_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(mymethod=METHOD)
    pytester.syspathinsert()
    baseline = pytester.path / "baseline.json"
    first = run(pytester, "--audit-baseline", str(baseline), "--audit-update-baseline")
    first.assert_outcomes(passed=1)
    assert "baseline written to" in first.stdout.str()
    assert json.loads(baseline.read_text())["results"][0]["check"] == "utility_preserved"

    again = run(pytester, "--audit-baseline", str(baseline))
    again.assert_outcomes(passed=1)
    assert "0 significant regression(s)" in again.stdout.str() and "no match in the baseline" not in again.stdout.str()
    # A run that does not match the baseline's settings is judged strictly, and says so.
    other = run(pytester, "--audit-baseline", str(baseline), "--audit-budget", "0.2")
    assert "warning: 1 of 1 result(s) have no match in the baseline" in other.stdout.str()

    monkeypatch.setenv("MAKE_IT_WORSE", "1")
    report = pytester.path / "worse.json"
    worse = run(pytester, "--audit-baseline", str(baseline), "--audit-report", str(report))
    worse.assert_outcomes(failed=1)
    out = worse.stdout.str()
    # the check alone would still pass (accuracy within the margin): the gate is what fails it
    assert "utility_preserved: PASS" in out and "regression against baseline" in out
    assert cli_main(["compare", str(baseline), str(report)]) == 1
    assert cli_main(["compare", str(baseline), str(baseline)]) == 0


def test_a_baseline_of_another_fixture_build_is_not_a_regression(
    pytester: pytest.Pytester, audit_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A baseline written where another torch or CPU kernel built other weights under the same key: the gate
    does not call the fixture's difference the method's; the test is judged on its own verdict and the run says
    why and what to do."""
    pytester.makepyfile(mymethod=METHOD)
    pytester.syspathinsert()
    baseline = pytester.path / "baseline.json"
    run(pytester, "--audit-baseline", str(baseline), "--audit-update-baseline").assert_outcomes(passed=1)
    doc = json.loads(baseline.read_text())
    meta = doc["results"][0]["meta"]
    entry = json.loads((Path(meta["fixture"]) / "meta.json").read_text())
    from unlearn_audit.scenarios.provenance import built_with, fixture_id

    assert meta["fixture_id"] == fixture_id(entry) and meta["fixture_built_with"] == built_with(entry)
    meta_built_with = meta["fixture_built_with"]
    meta["fixture_id"], meta["fixture_built_with"] = "0123456789abcdef", "torch 2.11.0 on cuda (x86_64, NVIDIA H200)"
    baseline.write_text(json.dumps(doc))

    monkeypatch.setenv("MAKE_IT_WORSE", "1")  # worse enough to regress against a baseline of the same fixture
    report = pytester.path / "worse.json"
    gated = run(pytester, "--audit-baseline", str(baseline), "--audit-report", str(report))
    gated.assert_outcomes(passed=1)
    out = gated.stdout.str()
    assert "regression against baseline" not in out
    assert "1 of 1 result(s) were measured on other builds of their fixtures" in out
    assert "torch 2.11.0 on cuda" in out and "fixtures pack" in out
    assert f"unlearn-audit: fixtures built with {meta_built_with}" in out  # which build these verdicts are of
    assert json.loads(report.read_text())["results"][0]["baseline"]["status"] == "other fixture"
    assert cli_main(["compare", str(baseline), str(report)]) == 0


def test_known_failures_are_xfail_against_the_baseline(pytester: pytest.Pytester, audit_env: Path) -> None:
    """NoOp fails its removal checks; against its own baseline those are known failures, so the gate is green."""
    baseline = pytester.path / "noop.json"
    args = ("--unlearner", "unlearn_audit.methods:NoOp", "-k", "gaussian and not relearning and not mode_connected")
    pytester.runpytest(*args, "--audit-baseline", str(baseline), "--audit-update-baseline").assert_outcomes(
        passed=2, failed=1
    )
    report = pytester.path / "gated.json"
    gated = pytester.runpytest(*args, "--audit-baseline", str(baseline), "--audit-report", str(report), "-rx")
    gated.assert_outcomes(passed=2, xfailed=1)
    assert gated.ret == pytest.ExitCode.OK
    assert "known failure" in gated.stdout.str()
    # The report of a gated run (its known failure recorded as xfailed) serves as the next baseline.
    pytester.runpytest(*args, "--audit-baseline", str(report)).assert_outcomes(passed=2, xfailed=1)


def test_bad_baseline_is_a_usage_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    missing = pytester.runpytest(
        "--unlearner", "unlearn_audit.methods:NoOp", "--audit-baseline", str(tmp_path / "nope.json")
    )
    assert missing.ret == pytest.ExitCode.USAGE_ERROR and "no such file" in missing.stderr.str()
    junk = tmp_path / "junk.json"
    junk.write_text("{}")
    bad = pytester.runpytest("--unlearner", "unlearn_audit.methods:NoOp", "--audit-baseline", str(junk))
    assert bad.ret == pytest.ExitCode.USAGE_ERROR and "not an unlearn-audit JSON report" in bad.stderr.str()
    alone = pytester.runpytest("--unlearner", "unlearn_audit.methods:NoOp", "--audit-update-baseline")
    assert alone.ret == pytest.ExitCode.USAGE_ERROR


def result(score, stderr, outcome="passed", direction="lower_is_better"):
    return {"score": score, "stderr": stderr, "outcome": outcome, "direction": direction}


@pytest.mark.parametrize(
    "new, old, regressed",
    [
        (result(0.5, 0.08), result(0.5, 0.08), False),  # identical rerun
        (result(0.55, 0.08), result(0.5, 0.08), False),  # noise
        (result(0.9, 0.02), result(0.1, 0.02), True),  # much worse (lower is better)
        (result(0.1, 0.02), result(0.9, 0.02), False),  # much better
        (result(0.80, 0.01, direction="higher_is_better"), result(0.95, 0.01, direction="higher_is_better"), True),
        (result(5000, 0.0, "failed"), result(4000, 0.0), True),  # exact score, pass -> fail
        (result(4300, 0.0), result(4000, 0.0), False),  # exact score, still within budget
    ],
)
def test_compare_rule(new, old, regressed) -> None:
    assert compare(new, old)["regressed"] is regressed


def built_on(fixture_ids: list[str], record: dict) -> dict:
    metas = [{"fixture_id": f, "fixture_built_with": f"build {f}"} for f in fixture_ids]
    return {**record, "meta": {**metas[0], "per_seed": metas} if len(metas) > 1 else metas[0]}


def test_a_result_of_another_fixture_build_is_not_compared() -> None:
    worse, old = result(0.9, 0.02), result(0.1, 0.02)
    assert compare(built_on(["a"], worse), built_on(["a"], old))["regressed"]  # same build: the z-test
    assert compare(worse, built_on(["a"], old))["regressed"]  # a report that does not say: the z-test
    other = compare(built_on(["b"], worse), built_on(["a"], old))
    assert not other["regressed"] and other["status"] == "other fixture"
    assert other["fixture"] == {
        "baseline": ["a"],
        "now": ["b"],
        "baseline_built_with": ["build a"],
        "built_with": ["build b"],
    }
    assert "build a" in other["message"] and "build b" in other["message"]
    # pooled seeds: one seed's fixture of another build is enough
    assert compare(built_on(["a", "c"], worse), built_on(["a", "b"], old))["status"] == "other fixture"
    assert compare(built_on(["a", "b"], worse), built_on(["a", "b"], old))["status"] == "regressed"


@pytest.mark.parametrize(
    "record, failed",
    [
        ({"outcome": "failed", "verdict": "fail"}, True),
        ({"outcome": "xfailed", "verdict": "fail"}, True),  # a known failure of a gated run
        ({"outcome": "failed", "verdict": "pass"}, False),  # a regression of a gated run: the check passed
        ({"outcome": "xfailed", "verdict": "xfail"}, False),  # not judged (the attack did not work)
        ({"outcome": "error", "verdict": None}, True),  # errored before it was judged
        ({"outcome": "passed"}, False),  # a schema-1 record without a verdict
    ],
)
def test_what_counts_as_failed_in_the_baseline(record: dict, failed: bool) -> None:
    from unlearn_audit.reports.baseline import failed_in

    assert failed_in(record) is failed


def test_new_case_is_not_a_regression() -> None:
    assert compare(result(0.9, 0.01), None) == {"regressed": False, "status": "new", "message": "not in the baseline"}


def test_exact_score_regression_keeps_the_report_valid(tmp_path: Path) -> None:
    """A worse exact score (budget count) has no z-statistic; the report must still be strict JSON."""
    from unlearn_audit.reports.collector import ReportCollector
    from unlearn_audit.reports.record import ResultRecord

    out = compare(result(5000, 0.0, "failed"), result(4000, 0.0))
    assert out["regressed"] and out["z"] is None
    collector = ReportCollector(options={})
    collector.results["x"] = ResultRecord(
        nodeid="x",
        unlearner="a",
        check="b",
        scenario="c",
        profile="tiny",
        seed=0,
        budget=0.1,
        baseline={**out, "weird": float("inf")},
    )
    collector.write(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["baseline"]["weird"] is None


def test_turning_to_fail_is_a_regression_even_if_the_score_moved_the_other_way() -> None:
    out = compare(result(-0.5, 0.08, "failed"), result(0.0, 0.08, "passed"))
    assert out["regressed"]


def _schema1(tmp_path: Path, seeds: list[int]) -> Path:
    results = [
        {
            "nodeid": f"t[{s}]",
            "unlearner": "pkg:M",
            "check": "gaussian_leakage",
            "scenario": "gaussian",
            "profile": "tiny",
            "seed": s,
            "budget": 0.1,
            "outcome": "passed",
            "score": 0.1,
            "stderr": 0.08,
            "direction": "lower_is_better",
        }
        for s in seeds
    ]
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"schema_version": 1, "results": results}))
    return path


def test_a_one_seed_baseline_of_schema_1_still_matches_todays_one_seed_test(tmp_path: Path) -> None:
    from unlearn_audit.reports.baseline import load_baseline
    from unlearn_audit.reports.record import ResultRecord

    baseline = load_baseline(_schema1(tmp_path, [0]))
    today = ResultRecord(
        nodeid="x",
        unlearner="pkg:M",
        check="gaussian_leakage",
        scenario="gaussian",
        profile="tiny",
        seed=0,
        seeds=[0],
        budget=0.1,
    )
    assert today.key in baseline


def test_a_per_seed_baseline_of_schema_1_says_how_to_regenerate(tmp_path: Path) -> None:
    from unlearn_audit.reports.baseline import BaselineError, load_baseline

    with pytest.raises(BaselineError, match=r"one test per seed \(seeds \[0, 1\]\).*--audit-update-baseline"):
        load_baseline(_schema1(tmp_path, [0, 1]))


def test_compare_advice_fits_the_file_it_is_about(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing new report is not created with --audit-update-baseline; a schema-1 baseline's advice keeps its flag."""
    baseline, missing = _schema1(tmp_path, [0]), tmp_path / "missing.json"
    assert cli_main(["compare", str(baseline), str(missing)]) == 2
    said = capsys.readouterr().out.replace("\n", "")
    assert f"{missing}: no such file (write the report with a pytest run given --audit-report {missing})" in said
    assert "update-baseline" not in said
    assert cli_main(["compare", str(missing), str(baseline)]) == 2
    said = capsys.readouterr().out.replace("\n", "")
    assert f"{missing}: no such file (write the baseline with a pytest run given --audit-baseline {missing} " in said
    multi = _schema1(tmp_path, [0, 1])
    assert cli_main(["compare", str(multi), str(multi)]) == 2
    said = capsys.readouterr().out.replace("\n", "")
    regenerate = f"regenerate the baseline with this version: --audit-baseline {multi} --audit-update-baseline"
    assert regenerate in said and said.startswith(f"unlearn-audit compare: {multi}: written by an older")


def test_the_option_names_itself_in_the_plugins_errors(tmp_path: Path) -> None:
    from unlearn_audit.reports.baseline import BaselineError, load_baseline

    with pytest.raises(BaselineError, match=r"^--audit-baseline \S+missing.json: no such file \(write the baseline"):
        load_baseline(tmp_path / "missing.json")
