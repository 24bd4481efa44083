"""The typed result record: a test's case travels with its report, so errored tests are attributed too."""

from __future__ import annotations

import json
from types import SimpleNamespace

from unlearn_audit.reports.collector import ReportCollector
from unlearn_audit.reports.record import CASE_PROPERTY, RESULT_PROPERTY, SCHEMA_VERSION, ResultRecord, key_of

CASE = {
    "unlearner": "pkg.m:M",
    "check": "utility_preserved",
    "scenario": "backdoor",
    "profile": "cifar10-resnet18-standin",
    "seed": 1,
    "budget": 0.1,
}


def report(when: str, outcome: str, props: list[tuple[str, str]], nodeid: str = "t.py::test[x]") -> SimpleNamespace:
    return SimpleNamespace(
        nodeid=nodeid,
        when=when,
        outcome=outcome,
        failed=outcome == "failed",
        skipped=outcome == "skipped",
        passed=outcome == "passed",
        user_properties=props,
        duration=0.5,
        longrepr="Traceback ...\nRuntimeError: boom",
    )


def test_a_test_that_errors_before_it_is_judged_keeps_its_case_even_with_dashes_in_the_profile() -> None:
    collector = ReportCollector(options={})
    collector.add(report("setup", "failed", [(CASE_PROPERTY, json.dumps(CASE))]))
    (record,) = collector.records()
    assert record.outcome == "error" and record.verdict is None and "boom" in record.message
    assert (record.unlearner, record.profile, record.scenario, record.seed) == (
        "pkg.m:M",
        "cifar10-resnet18-standin",
        "backdoor",
        1,
    )


def test_judged_result_and_round_trip_through_json() -> None:
    collector = ReportCollector(options={})
    judged = {
        "result": {
            "verdict": "fail",
            "score": 0.4,
            "stderr": 0.02,
            "reference": 0.9,
            "reference_stderr": 0.01,
            "direction": "higher_is_better",
            "rule": "r",
            "message": "m",
            "details": {"a": 1},
        },
        "meta": {"unlearn_seconds": 1.0},
    }
    props = [(CASE_PROPERTY, json.dumps(CASE)), (RESULT_PROPERTY, json.dumps(judged))]
    collector.add(report("setup", "passed", props[:1]))  # a passing setup decides nothing
    collector.add(report("call", "failed", props))
    (record,) = collector.records()
    assert (record.outcome, record.verdict, record.score, record.meta) == (
        "failed",
        "fail",
        0.4,
        {"unlearn_seconds": 1.0},
    )
    doc = json.loads(json.dumps(collector.document()))
    assert ResultRecord.from_json(doc["results"][0]) == record
    assert (
        key_of(doc["results"][0])
        == record.key
        == ("pkg.m:M", "utility_preserved", "backdoor", "cifar10-resnet18-standin", (1,), 0.1)
    )


def test_tests_without_a_case_are_not_audit_results() -> None:
    collector = ReportCollector(options={})
    collector.add(report("call", "passed", []))
    assert collector.records() == []


def test_the_record_says_what_the_score_measures() -> None:
    """Schema 3: the check's metric and unit travel from its result to the report, for the plots to read."""
    collector = ReportCollector(options={})
    judged = {
        "result": {
            "verdict": "pass",
            "score": 0.9,
            "stderr": 0.01,
            "reference": 0.91,
            "reference_stderr": 0.01,
            "direction": "higher_is_better",
            "rule": "r",
            "message": "",
            "details": {},
            "metric": "clean test accuracy",
            "unit": "fraction",
            "reference_label": "retrain",
        },
        "meta": {},
    }
    collector.add(report("call", "passed", [(CASE_PROPERTY, json.dumps(CASE)), (RESULT_PROPERTY, json.dumps(judged))]))
    doc = json.loads(json.dumps(collector.document()))
    assert doc["schema_version"] == SCHEMA_VERSION == 3
    assert (doc["results"][0]["metric"], doc["results"][0]["unit"]) == ("clean test accuracy", "fraction")
    assert doc["results"][0]["reference_label"] == "retrain"
    assert ResultRecord.from_json(doc["results"][0]) == collector.records()[0]


def test_a_result_of_an_older_report_loads_without_metric_and_unit() -> None:
    old = {"nodeid": "t.py::test[x]", **CASE, "seeds": [1], "outcome": "passed", "verdict": "pass", "score": 0.9}
    record = ResultRecord.from_json(old)
    assert (record.metric, record.unit, record.score) == ("", "", 0.9)
    assert record.key == key_of(old)


def test_a_check_result_carries_its_declared_metric_and_unit_into_the_record() -> None:
    from unlearn_audit.checks import check_info
    from unlearn_audit.checks.base import CheckResult

    info = check_info("utility_preserved")
    result = CheckResult(
        check=info.name,
        metric=info.metric,
        unit=info.unit,
        verdict="pass",
        score=0.9,
        stderr=0.01,
        reference=0.9,
        reference_stderr=0.01,
        direction="higher_is_better",
        rule="r",
    )
    assert (result.to_json()["metric"], result.to_json()["unit"]) == ("clean test accuracy", "fraction")


def test_a_pooled_result_keeps_what_its_seeds_measured() -> None:
    from unlearn_audit.checks import evidence
    from unlearn_audit.checks.base import CheckResult
    from unlearn_audit.checks.pooling import pool_check

    def seed(total: float) -> CheckResult:
        return CheckResult(
            check="gaussian_leakage",
            metric="mean GUS of the forget-set poisons",
            unit="z-score",
            verdict="pass",
            score=total / 10,
            stderr=0.3,
            reference=0.0,
            reference_stderr=0.3,
            direction="lower_is_better",
            rule="r",
            details={"evidence": evidence.unit_normal(total, 10)},
        )

    pooled = pool_check("gaussian_leakage", [0, 1], [seed(1.0), seed(-2.0)], [None, None], 0.01, 0.01)
    assert (pooled.metric, pooled.unit) == ("mean GUS of the forget-set poisons", "z-score")


def test_the_original_column_of_a_relearning_result_is_at_the_k_shown() -> None:
    """One seed: its own k; pooled: the pooled result's k, whichever k each seed alone would show."""
    from unlearn_audit.reports.collector import _original

    def seed_details(own_k: int) -> dict:
        curves = [{"k": k, "original": original} for k, original in ((0, 0.1), (10, 0.6), (50, 0.9))]
        return {"score_part": f"k={own_k}", "relearning": curves}

    one = ResultRecord(nodeid="t", unlearner="u", check="relearning_resistant", scenario="backdoor", profile="tiny",
                       seed=0, budget=0.1, details=seed_details(10))  # fmt: skip
    assert _original(one) == 0.6
    per_seed = [
        {
            "seed": s,
            "verdict": "fail",
            "score": 0.5,
            "stderr": 0.1,
            "reference": 0.2,
            "reference_stderr": 0.1,
            "details": seed_details(k),
        }  # fmt: skip
        for s, k in ((0, 10), (1, 0))
    ]
    pooled = ResultRecord(nodeid="t", unlearner="u", check="relearning_resistant", scenario="backdoor",
                          profile="tiny", seed=None, seeds=[0, 1], budget=0.1,
                          details={"score_part": "k=50", "per_seed": per_seed})  # fmt: skip
    assert _original(pooled) == 0.9
