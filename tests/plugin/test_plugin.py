"""The pytest plugin, driven through pytester: options, ids, usage errors, reports, xdist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from unlearn_audit.engine.devices import default_device_may_be_gpu

METHODS = "unlearn_audit.methods"


def test_help_documents_every_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    out = result.stdout.str()
    for opt in (
        "--unlearner",
        "--audit-profile",
        "--audit-seeds",
        "--audit-report",
        "--audit-cache",
        "--audit-timeout",
        "--audit-budget",
        "--audit-device",
        "--audit-baseline",
        "--audit-update-baseline",
        "--audit-threads",
    ):
        assert opt in out


def test_inert_without_unlearner(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_one():\n    assert True\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert "unlearn-audit:" not in result.stdout.str()
    assert "test_gaussian_leakage" not in result.stdout.str()


def test_plugin_module_does_not_import_torch() -> None:
    code = "import sys, unlearn_audit.plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("no_such_pkg.mod:Thing", "cannot import module 'no_such_pkg.mod'"),
        (f"{METHODS}:DoesNotExist", "has no attribute 'DoesNotExist'"),
        ("not-registered-name", "unlearn_audit.unlearners"),
        (f"{METHODS}:", "module or attribute missing"),
        ("unlearn_audit.methods:__all__", "is not an unlearner"),
    ],
)
def test_bad_spec_is_a_usage_error(pytester: pytest.Pytester, spec: str, expected: str) -> None:
    result = pytester.runpytest("--unlearner", spec)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert expected in err
    assert "package.module:Attr" in err
    assert "Traceback" not in err + result.stdout.str()


def test_bad_spec_under_xdist_is_a_usage_error_before_any_fixture(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Under xdist the specs are checked in a child while the controller imports torch; the answer
    still comes before any fixture is built."""
    pytest.importorskip("xdist")
    cache = tmp_path / "cache"
    result = pytester.runpytest_subprocess(
        "--unlearner", f"{METHODS}:DoesNotExist", "--audit-cache", str(cache), "-n", "2"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "has no attribute 'DoesNotExist'" in err and "Traceback" not in err
    assert not cache.exists() or not any(cache.rglob("meta.json")), "nothing was built for a run that cannot audit"


def processes_marked(marker: str) -> list[int]:
    """The pids of live processes (not zombies) whose environment holds `marker`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if (
                marker.encode() in (proc / "environ").read_bytes()
                and (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            ):
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def test_bad_spec_under_xdist_on_a_warm_cache_is_a_usage_error_before_any_test(
    pytester: pytest.Pytester, audit_env: Path, prepared_tiny_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a warm cache the workers start before the spec check has answered; the answer still comes
    before any test runs, and no process is left behind."""
    pytest.importorskip("xdist")
    pytester.makeconftest(PROCESS_PROBE)
    marker = f"UA_TEST_MARK_{os.getpid()}_{time.monotonic_ns()}"
    monkeypatch.setenv(marker, "1")
    result = pytester.runpytest_subprocess(
        "--unlearner", f"{METHODS}:NoOp", "--unlearner", f"{METHODS}:DoesNotExist", "-n", "2"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "has no attribute 'DoesNotExist'" in err and "Traceback" not in err
    assert "passed" not in result.stdout.str() and "failed" not in result.stdout.str()
    probe = json.loads((pytester.path / "probe-controller.json").read_text())
    assert probe["torch"] is False  # the warm path
    deadline = time.monotonic() + 10  # the forkserver and the resource tracker leave when their parent has
    while processes_marked(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_marked(marker) == [], "no process of the run is left behind"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--audit-profile", "nope"], "unknown --audit-profile 'nope'; available: "),  # the list grows with profiles
        (["--audit-seeds", "0"], "--audit-seeds must be a positive number of seeds N"),
        (["--audit-budget", "2"], "--audit-budget must be distinct fractions"),
        (["--audit-budget", "0.1,0.1"], "--audit-budget must be distinct fractions"),
        (["--audit-update-baseline"], "--audit-update-baseline needs --audit-baseline"),
        (["--audit-threads", "0"], "--audit-threads must be a positive integer"),
        (["--audit-timeout", "-1"], "--audit-timeout must be a positive number"),
        (["--audit-device", "gpu"], "--audit-device must be a torch device (cpu, cuda, mps, xpu)"),
        (["--audit-device", "cuda:x"], "--audit-device must be a torch device"),
    ],
)
def test_bad_options_are_usage_errors(pytester: pytest.Pytester, args: list[str], expected: str) -> None:
    result = pytester.runpytest("--unlearner", f"{METHODS}:NoOp", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert expected in result.stderr.str()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this torch sees a CUDA device")
@pytest.mark.parametrize("extra", [[], ["--collect-only"]])
def test_a_device_this_torch_cannot_use_is_a_usage_error(
    pytester: pytest.Pytester, tmp_path: Path, extra: list[str]
) -> None:
    """Not an INTERNALERROR from moving the first model there, and before collection (as every bad option)."""
    result = pytester.runpytest(
        "--unlearner", f"{METHODS}:NoOp", "--audit-device", "cuda", "--audit-cache", str(tmp_path / "cache"), *extra
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--audit-device cuda: this torch" in result.stderr.str() and "sees no CUDA device" in result.stderr.str()
    assert "collected" not in result.stdout.str() and not (tmp_path / "cache").exists()


def test_collect_only_lists_readable_ids_without_building(pytester: pytest.Pytester, tmp_path: Path) -> None:
    cache = tmp_path / "empty-cache"
    result = pytester.runpytest(
        "--collect-only",
        "-q",
        "--unlearner",
        f"{METHODS}:NoOp",
        "--unlearner",
        f"{METHODS}:Retrain",
        "--audit-seeds",
        "2",
        "--audit-cache",
        str(cache),
    )
    out = result.stdout.str()
    # One test per (unlearner, scenario, check): the seeds are pooled into it.
    assert "test_gaussian_leakage[unlearn_audit.methods:NoOp-tiny-gaussian-seeds0-1]" in out
    assert "test_targeted_removed[unlearn_audit.methods:Retrain-tiny-backdoor-seeds0-1]" in out
    from unlearn_audit.checks import CHECK_NAMES
    from unlearn_audit.scenarios.recipes import load_profile_recipes

    recipes = load_profile_recipes("tiny").values()
    cases = 2 * sum(len(r.checks) for r in recipes)  # unlearners x (scenario, check)
    unused = sum(1 for c in CHECK_NAMES if not any(c in r.checks for r in recipes))  # one skipped placeholder each
    assert f"{cases + unused} tests collected" in out
    assert not cache.exists(), "collection must not build fixtures"


def test_noop_fails_removal_checks_with_explained_scores(pytester: pytest.Pytester, audit_env: Path) -> None:
    report = pytester.path / "audit.json"
    result = pytester.runpytest(
        "--unlearner",
        f"{METHODS}:NoOp",
        "--audit-report",
        str(report),
        "-rA",
        "-k",
        "not gradient_canceling and not witches_brew",
    )
    result.assert_outcomes(passed=4, failed=6)
    out = result.stdout.str()
    for needle in (
        "gaussian_leakage: FAIL",
        "targeted_removed: FAIL",
        "score",
        "retrain",
        "rule",
        "two-sided z-test",
        "unlearn-audit: score",
    ):
        assert needle in out
    doc = json.loads(report.read_text())
    assert doc["schema_version"] == 3
    assert {"unlearn_audit", "torch", "python"} <= set(doc["versions"])
    by_check = {(r["check"], r["scenario"]): r for r in doc["results"]}
    assert len(by_check) == 10
    for r in doc["results"]:
        for key in (
            "unlearner",
            "check",
            "scenario",
            "profile",
            "seed",
            "outcome",
            "score",
            "stderr",
            "reference",
            "rule",
        ):
            assert key in r
        assert r["meta"]["recipe_hash"] and r["meta"]["device"] == "cpu"
        assert r["metric"] and r["unit"], r["nodeid"]  # what the score measures, for the plots
        assert r["reference_label"], r["nodeid"]  # what the reference is
    # Each one-seed verdict is what its evidence decides at its level: pooled seeds run the same tests.
    from unlearn_audit.checks.evidence import decide

    for r in doc["results"]:
        d = r["details"]
        if "evidence" in d:
            assert decide([d["evidence"]], d["alpha"]).rejected == (d.get("removal_verdict", r["verdict"]) == "fail"), (
                r["nodeid"]
            )
    gauss = by_check[("gaussian_leakage", "gaussian")]
    assert gauss["outcome"] == "failed" and gauss["score"] > 0.3 and gauss["stderr"] == pytest.approx(150**-0.5)
    assert by_check[("targeted_removed", "backdoor")]["outcome"] == "failed"
    for scenario in ("gaussian", "backdoor"):
        assert by_check[("relearning_resistant", scenario)]["outcome"] == "failed"
        assert by_check[("not_mode_connected", scenario)]["outcome"] == "failed"
        # the relearning check's score is the attack's poison metric, in the attack's unit
        assert (
            by_check[("relearning_resistant", scenario)]["unit"]
            == {"gaussian": "z-score", "backdoor": "fraction"}[scenario]
        )
        assert by_check[("budget_respected", scenario)]["reference_label"] == "budget"
        relearning = by_check[("relearning_resistant", scenario)]["details"]
        curves, attack = relearning["relearning"], relearning["attack"]
        assert attack["optimizer"] == "adam" and attack["window"] == 10 and attack["steps"] >= 200
        evaluations = -(-attack["steps"] // attack["eval_every"])  # every eval_every steps and at the end, after step 0
        assert [c["k"] for c in curves] == [0, 10, 50] and len(curves[0]["method_curve"]) == 1 + evaluations
        path = by_check[("not_mode_connected", scenario)]["details"]["path"]
        assert len(path["alphas"]) == len(path["test_accuracy"]) == len(path["poison"]) == 21
    assert by_check[("utility_preserved", "gaussian")]["outcome"] == "passed"


def test_a_destroyed_model_fails_the_removal_checks(pytester: pytest.Pytester, audit_env: Path) -> None:
    """A fresh random model has no poison left, and no accuracy: every removal check applies the utility rule."""
    report = pytester.path / "r.json"
    result = pytester.runpytest(
        "--unlearner", f"{METHODS}:FreshRandomModel", "-k", "gaussian and not budget", "--audit-report", str(report)
    )
    result.assert_outcomes(failed=4)
    by_check = {r["check"]: r for r in json.loads(report.read_text())["results"]}
    leakage = by_check["gaussian_leakage"]
    # the poison metric alone passes (a random model does not depend on the noise); the utility rule fails it
    assert leakage["details"]["removal_verdict"] == "pass" and leakage["details"]["utility_verdict"] == "fail"
    assert "removal by destroying the model is not removal" in leakage["message"]
    assert by_check["utility_preserved"]["score"] < 0.3


def test_retrain_passes_and_is_exempt_from_budget(pytester: pytest.Pytester, audit_env: Path) -> None:
    result = pytester.runpytest(
        "--unlearner", f"{METHODS}:Retrain", "-rs", "-k", "not gradient_canceling and not witches_brew"
    )
    result.assert_outcomes(passed=8, skipped=2)
    assert "exempt" in result.stdout.str()


def test_junit_xml_carries_scores(pytester: pytest.Pytester, audit_env: Path) -> None:
    xml = pytester.path / "out.xml"
    pytester.runpytest("--unlearner", f"{METHODS}:NoOp", f"--junitxml={xml}", "-k", "gaussian_leakage")
    props = {p.get("name"): p.get("value") for p in ET.parse(xml).iter("property")}
    assert "audit.score" in props and float(props["audit.score"]) > 0
    assert "unlearn_audit" in props and json.loads(props["unlearn_audit.case"])["check"] == "gaussian_leakage"


HOSTILE = textwrap.dedent(
    """
    import copy, time
    import torch
    from torch import nn

    class Raises:
        def unlearn(self, model, request):
            raise RuntimeError("boom from the method")

    def returns_nan(model, request):
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return model

    def wrong_architecture(model, request):
        return nn.Sequential(nn.Flatten(), nn.Linear(1024, 10))

    def returns_none(model, request):
        return None

    def mutates_data(model, request):
        request.retain.inputs.mul_(0)
        return model

    def hangs(model, request):
        x = request.retain.inputs[:8].to(request.device)
        while True:
            model(x)  # forward passes let the harness stop it at the deadline

    def overspends(model, request):
        opt = torch.optim.SGD(model.parameters(), lr=1e-4)
        for _ in range(5):  # 5 epochs of the retain set > 10% of 30 epochs
            for x, y in request.retain.batches(64, generator=request.generator):
                opt.zero_grad(); torch.nn.functional.cross_entropy(model(x), y).backward(); opt.step()
        return model
    """
)


@pytest.mark.parametrize(
    "name, message",
    [
        ("hostile:Raises", "raised RuntimeError: boom from the method"),
        ("hostile:returns_nan", "NaN/Inf"),
        ("hostile:wrong_architecture", "another architecture"),
        ("hostile:returns_none", "expected a torch.nn.Module, got NoneType"),
        ("hostile:mutates_data", "modified the request's forget/retain/validation data"),
    ],
)
def test_hostile_unlearner_fails_cleanly(pytester: pytest.Pytester, audit_env: Path, name: str, message: str) -> None:
    pytester.makepyfile(hostile=HOSTILE)
    pytester.syspathinsert()
    result = pytester.runpytest(
        "--unlearner",
        name,
        "--unlearner",
        f"{METHODS}:Retrain",
        "-k",
        "gaussian and not relearning and not mode_connected",
    )
    # every check of the hostile method fails with the message; the session goes on and Retrain still passes
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed") == 3 and outcomes.get("passed") == 2, result.stdout.str()
    assert message in result.stdout.str()


def test_hanging_unlearner_is_stopped_by_timeout(pytester: pytest.Pytester, audit_env: Path) -> None:
    pytester.makepyfile(hostile=HOSTILE)
    pytester.syspathinsert()
    result = pytester.runpytest("--unlearner", "hostile:hangs", "--audit-timeout", "2", "-k", "gaussian_leakage")
    result.assert_outcomes(failed=1)
    assert "did not finish within the time limit of 2 s" in result.stdout.str()


def test_overspending_fails_budget_only(pytester: pytest.Pytester, audit_env: Path) -> None:
    pytester.makepyfile(hostile=HOSTILE)
    pytester.syspathinsert()
    result = pytester.runpytest("--unlearner", "hostile:overspends", "-k", "budget and gaussian")
    result.assert_outcomes(failed=1)
    assert "example-gradients" in result.stdout.str()


def test_cached_fixture_is_unchanged_after_hostile_runs(pytester: pytest.Pytester, audit_env: Path) -> None:
    from unlearn_audit.scenarios.cache import FixtureCache

    pytester.makepyfile(hostile=HOSTILE)
    pytester.syspathinsert()
    pytester.runpytest("--unlearner", "hostile:mutates_data", "--unlearner", "hostile:returns_nan")
    cache = FixtureCache(audit_env)
    assert cache.entries() and all(not cache.verify_path(e.path) for e in cache.entries())


def test_function_and_instance_specs(pytester: pytest.Pytester, audit_env: Path) -> None:
    pytester.makepyfile(
        mine=textwrap.dedent(
            """
            from unlearn_audit.methods import NoOp
            def noop(model, request):
                return model
            INSTANCE = NoOp()
            def make():
                return NoOp()
            """
        )
    )
    pytester.syspathinsert()
    result = pytester.runpytest(
        "--unlearner",
        "mine:noop",
        "--unlearner",
        "mine:INSTANCE",
        "--unlearner",
        "mine:make",
        "-k",
        "targeted and backdoor",
    )
    result.assert_outcomes(failed=3)


def test_first_run_builds_with_progress_then_reuses_cache(pytester: pytest.Pytester, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = ("--unlearner", f"{METHODS}:NoOp", "--audit-cache", str(cache), "-k", "budget and gaussian")
    first = pytester.runpytest_subprocess(*args)
    first.assert_outcomes(passed=1)
    assert "building 1 fixture(s)" in first.stderr.str()
    assert "gaussian seed 0: original model" in first.stderr.str()
    second = pytester.runpytest_subprocess(*args)
    second.assert_outcomes(passed=1)
    assert "building" not in second.stderr.str()


# Records, per pytest process, whether it imported torch.
PROCESS_PROBE = """
import json, sys

def pytest_unconfigure(config):
    name = config.workerinput["workerid"] if hasattr(config, "workerinput") else "controller"
    with open(f"probe-{name}.json", "w") as f:
        json.dump({"torch": "torch" in sys.modules}, f)
"""


def test_xdist_gives_serial_verdicts(pytester: pytest.Pytester, audit_env: Path, prepared_tiny_cache: Path) -> None:
    """Also: on a warm cache of a CPU audit the controller never imports torch."""
    pytest.importorskip("xdist")

    args = [
        "--unlearner",
        f"{METHODS}:NoOp",
        "--unlearner",
        f"{METHODS}:GradientAscent",
        "-k",
        "not gradient_canceling and not witches_brew",
    ]
    serial_report = pytester.path / "serial.json"
    xdist_report = pytester.path / "xdist.json"
    pytester.runpytest_subprocess(*args, "--audit-report", str(serial_report))
    pytester.makeconftest(PROCESS_PROBE)
    pytester.runpytest_subprocess(*args, "-n", "2", "--audit-report", str(xdist_report))

    probes = {p.stem.removeprefix("probe-"): json.loads(p.read_text()) for p in pytester.path.glob("probe-*.json")}
    assert set(probes) == {"controller", "gw0", "gw1"}
    if not default_device_may_be_gpu():  # else only torch can say whether the default device is a GPU
        assert probes["controller"]["torch"] is False, "a warm cache needs nothing of torch in the controller"
    assert probes["gw0"]["torch"] and probes["gw1"]["torch"]

    def verdicts(path: Path) -> dict[str, tuple[str, float]]:
        doc = json.loads(path.read_text())
        return {
            r["nodeid"].rpartition("::")[2].partition("@")[0]: (r["outcome"], round(r["score"], 6))
            for r in doc["results"]
        }

    serial, parallel = verdicts(serial_report), verdicts(xdist_report)
    assert len(serial) == 20
    assert serial == parallel
    # all checks of one (unlearner, scenario, seed) ran on one worker, sharing one unlearn() call
    workers: dict[tuple, set] = {}
    for r in json.loads(xdist_report.read_text())["results"]:
        workers.setdefault((r["unlearner"], r["scenario"], tuple(r["seeds"])), set()).add(r["meta"]["worker"])
    assert all(len(w) == 1 for w in workers.values()), workers
    assert set().union(*workers.values()) <= {"gw0", "gw1"}


def test_budget_sweep_is_a_parametrization(pytester: pytest.Pytester, audit_env: Path) -> None:
    report = pytester.path / "sweep.json"
    result = pytester.runpytest(
        "--unlearner",
        f"{METHODS}:GradientDescent",
        "--audit-budget",
        "0.02,0.1",
        "-k",
        "budget_respected and gaussian",
        "--audit-report",
        str(report),
        "-v",
    )
    result.assert_outcomes(passed=2)
    assert "GradientDescent-tiny-gaussian-seed0-budget0.02]" in result.stdout.str()
    spent = {r["budget"]: r["meta"]["example_gradients"] for r in json.loads(report.read_text())["results"]}
    assert spent == {0.02: int(0.02 * 30 * 1437), 0.1: int(0.1 * 30 * 1437)}
