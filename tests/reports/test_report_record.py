"""The typed result record: a test's case travels with its report, so errored tests are attributed too."""

from __future__ import annotations

import json
from types import SimpleNamespace

from unlearn_audit.reports.collector import ReportCollector
from unlearn_audit.reports.record import CASE_PROPERTY, RESULT_PROPERTY, ResultRecord, key_of

CASE = {"unlearner": "pkg.m:M", "check": "utility_preserved", "scenario": "backdoor",
        "profile": "cifar10-resnet18-standin", "seed": 1, "budget": 0.1}


def report(when: str, outcome: str, props: list[tuple[str, str]], nodeid: str = "t.py::test[x]") -> SimpleNamespace:
    return SimpleNamespace(nodeid=nodeid, when=when, outcome=outcome, failed=outcome == "failed",
                           skipped=outcome == "skipped", passed=outcome == "passed", user_properties=props,
                           duration=0.5, longrepr="Traceback ...\nRuntimeError: boom")


def test_a_test_that_errors_before_it_is_judged_keeps_its_case_even_with_dashes_in_the_profile() -> None:
    collector = ReportCollector(options={})
    collector.add(report("setup", "failed", [(CASE_PROPERTY, json.dumps(CASE))]))
    (record,) = collector.records()
    assert record.outcome == "error" and record.verdict is None and "boom" in record.message
    assert (record.unlearner, record.profile, record.scenario, record.seed) == ("pkg.m:M", "cifar10-resnet18-standin", "backdoor", 1)


def test_judged_result_and_round_trip_through_json() -> None:
    collector = ReportCollector(options={})
    judged = {"result": {"verdict": "fail", "score": 0.4, "stderr": 0.02, "reference": 0.9, "reference_stderr": 0.01,
                         "direction": "higher_is_better", "rule": "r", "message": "m", "details": {"a": 1}},
              "meta": {"unlearn_seconds": 1.0}}
    props = [(CASE_PROPERTY, json.dumps(CASE)), (RESULT_PROPERTY, json.dumps(judged))]
    collector.add(report("setup", "passed", props[:1]))  # a passing setup decides nothing
    collector.add(report("call", "failed", props))
    (record,) = collector.records()
    assert (record.outcome, record.verdict, record.score, record.meta) == ("failed", "fail", 0.4, {"unlearn_seconds": 1.0})
    doc = json.loads(json.dumps(collector.document()))
    assert ResultRecord.from_json(doc["results"][0]) == record
    assert key_of(doc["results"][0]) == record.key == ("pkg.m:M", "utility_preserved", "backdoor", "cifar10-resnet18-standin", (1,), 0.1)


def test_tests_without_a_case_are_not_audit_results() -> None:
    collector = ReportCollector(options={})
    collector.add(report("call", "passed", []))
    assert collector.records() == []
