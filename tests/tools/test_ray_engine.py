"""`unlearn-audit calibrate --engine ray`: cells of one seed, pooled afterwards into the local run's report.

The slow test starts a private Ray cluster on 127.0.0.1 (its own port and temp dir), runs a
2-method x 2-seed sweep on it and the same sweep locally, and requires the two pooled reports to
agree on every verdict, score and detail (`unlearn-audit diff`). The cluster's processes are found by
that temp dir in their command lines and ended by pid, so no other Ray on the machine is touched.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from unlearn_audit.checks.base import CheckResult
from unlearn_audit.checks.seed_parts import SeedParts
from unlearn_audit.reports.assemble import AssembleError, assemble_reports
from unlearn_audit.tools.ray_engine import Cell, CellResult, RayUnavailable, gpus_for, import_ray


def result(verdict: str = "pass", effect: float = math.inf) -> CheckResult:
    return CheckResult(
        check="gaussian_leakage",
        verdict=verdict,
        score=0.1,
        stderr=0.2,
        reference=0.0,
        reference_stderr=None,
        direction="lower_is_better",
        rule="r",
        details={"power_effect": effect, "x": math.nan},
    )


def test_seed_parts_keep_infinities_that_the_strict_json_report_turns_into_null() -> None:
    parts = SeedParts(0.01 / 3, 0.01, "; alpha = 0.01/3", (4,), (result(),), (None,))
    back = SeedParts.from_text(json.loads(json.dumps({"meta": parts.to_text()}))["meta"])
    assert back.results[0].details["power_effect"] == math.inf and math.isnan(back.results[0].details["x"])
    assert (back.alpha, back.seeds, back.utility) == (parts.alpha, (4,), (None,))
    with pytest.raises(ValueError, match="judged this test differently"):
        parts.joined(SeedParts(0.01, 0.01, "", (5,), (result(),), (None,)))
    with pytest.raises(ValueError, match="seed"):
        parts.joined(parts)


def cell_doc(seed: int, **options) -> dict:
    parts = SeedParts(0.01, 0.01, "", (seed,), (result(),), (None,))
    record = {
        "nodeid": f"t.py::test_gaussian_leakage[unlearn_audit.methods:NoOp-tiny-gaussian-seed{seed}]",
        "unlearner": "unlearn_audit.methods:NoOp",
        "check": "gaussian_leakage",
        "scenario": "gaussian",
        "profile": "tiny",
        "seed": seed,
        "seeds": [seed],
        "budget": 0.04,
        "outcome": "passed",
        "verdict": "pass",
        "meta": {"seed_parts": parts.to_text(), "seed": seed, "unlearn_seconds": 1.0},
    }
    opts = {
        "unlearners": ["unlearn_audit.methods:NoOp"],
        "seeds": [seed],
        "keep_seed_parts": True,
        "profile": "tiny",
        **options,
    }
    return {"schema_version": 2, "options": opts, "results": [record]}


def test_assembly_pools_the_cells_seeds_and_names_the_pooled_test_as_the_local_run_does() -> None:
    doc = assemble_reports([("NoOp seed 1", cell_doc(1)), ("NoOp seed 0", cell_doc(0))])
    (r,) = doc["results"]
    assert r["seeds"] == [1, 0] and r["seed"] is None and r["nodeid"].endswith("-tiny-gaussian-seeds1,0]")
    assert [e["seed"] for e in r["details"]["per_seed"]] == [1, 0] and r["details"]["alpha"] == 0.01
    assert doc["options"]["seeds"] == [1, 0] and doc["options"]["keep_seed_parts"] is False
    assert "seed_parts" not in r["meta"] and [m["seed"] for m in r["meta"]["per_seed"]] == [1, 0]
    assert r["meta"]["unlearn_seconds"] == 2.0


def test_assembly_refuses_cells_of_different_runs_or_without_parts() -> None:
    with pytest.raises(AssembleError, match="options differ: profile"):
        assemble_reports([("a", cell_doc(0)), ("b", cell_doc(1, profile="text"))])
    with pytest.raises(AssembleError, match="did not keep"):
        assemble_reports([("a", cell_doc(0, keep_seed_parts=False))])
    missing = cell_doc(1)
    missing["options"]["seeds"] = [1, 2]  # a cell that should have judged seed 2 too
    with pytest.raises(AssembleError, match="judged seeds"):
        assemble_reports([("a", cell_doc(0)), ("b", missing)])


def test_a_cell_that_did_not_audit_is_a_failure_and_exit_1_is_a_result() -> None:
    cell = Cell("m:M", 0, "tiny")
    assert CellResult(cell, 1, "{}", "", 1.0, "n").failure is None
    assert "usage error" in CellResult(cell, 4, None, "", 1.0, "n").failure
    assert "no tests collected" in CellResult(cell, 5, None, "", 1.0, "n").failure
    assert "no report" in CellResult(cell, 0, None, "", 1.0, "n").failure
    assert "signal" in CellResult(cell, -9, None, "", 1.0, "n").failure


def test_a_cell_audits_its_own_seed_only() -> None:
    from unlearn_audit.plugin.settings import parse_seeds

    cmd = Cell("NoOp", 3, "tiny").command(Path("r.json"))
    assert parse_seeds(cmd[cmd.index("--audit-seeds") + 1]) == (3,) and "--audit-keep-seed-parts" in cmd


def test_gpu_cells_only_for_profiles_that_train_on_the_gpu() -> None:
    assert gpus_for("tiny") == 0 and gpus_for("cifar10-resnet18") == 1


def test_without_ray_the_engine_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(RayUnavailable, match=r"unlearn-audit\[ray\]"):
        import_ray()
    from unlearn_audit.tools.cli import main

    assert main(["calibrate", "--engine", "ray", "--methods", "NoOp", "--out", str(tmp_path)]) == 2
    assert "unlearn-audit[ray]" in capsys.readouterr().err
    assert main(["calibrate", "--address", "127.0.0.1:1", "--out", str(tmp_path)]) == 2  # --address needs --engine ray


# -- a sweep on a local cluster -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_of(marker: str) -> list[int]:
    """The pids whose command line names `marker` (the cluster's private temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _end(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@pytest.fixture
def ray_cluster() -> str:
    """A Ray head on 127.0.0.1 with 2 CPUs, in a private temp dir (short: Ray's socket paths are limited);
    its processes are ended by pid in the teardown, whatever happened."""
    pytest.importorskip("ray", reason="the Ray engine needs the [ray] extra")
    if not Path("/proc").is_dir():
        pytest.skip("the cluster's processes are found through /proc")
    temp = tempfile.mkdtemp(prefix="ua-ray-")
    port = _free_port()
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        started = subprocess.run(
            [
                ray,
                "start",
                "--head",
                "--node-ip-address=127.0.0.1",
                f"--port={port}",
                "--num-cpus=2",
                "--num-gpus=0",
                "--include-dashboard=false",
                f"--temp-dir={temp}",
                "--disable-usage-stats",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if started.returncode != 0:  # a machine where Ray itself cannot run (not the engine's fault): say why
            pytest.skip(f"`ray start --head` failed on this machine: {(started.stderr or started.stdout)[-500:]}")
        yield f"127.0.0.1:{port}"
    finally:
        _end(_processes_of(temp), signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _processes_of(temp) and time.monotonic() < deadline:
            time.sleep(0.2)
        _end(_processes_of(temp), signal.SIGKILL)
        time.sleep(0.5)
        left = _processes_of(temp)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left running: {left}"


SWEEP = ["--profile", "tiny", "--seeds", "2", "--methods", "NoOp", "GradientDescent", "-k", "tiny-gaussian-"]


@pytest.mark.slow
def test_ray_sweep_gives_the_local_runs_report(ray_cluster: str, tmp_path: Path) -> None:
    """2 methods x 2 seeds on one scenario: 4 Ray cells, pooled, equal the local run test by test."""
    from unlearn_audit.reports.diff import diff_reports
    from unlearn_audit.tools.cli import main

    cache = ["--cache", str(tmp_path / "cache")]
    started = time.perf_counter()
    assert (
        main(["calibrate", *SWEEP, *cache, "--engine", "ray", "--address", ray_cluster, "--out", str(tmp_path / "ray")])
        == 0
    )
    ray_seconds = time.perf_counter() - started
    started = time.perf_counter()
    assert main(["calibrate", *SWEEP, *cache, "--out", str(tmp_path / "local")]) == 0
    local_seconds = time.perf_counter() - started
    print(
        f"sweep of 2 methods x 2 seeds on tiny/gaussian: ray {ray_seconds:.0f} s (fixtures built), "
        f"local {local_seconds:.0f} s (fixtures cached)"
    )
    ray_report, local_report = (tmp_path / d / "calibration-tiny.json" for d in ("ray", "local"))
    assert diff_reports(local_report, ray_report) == []
    ray_doc, local_doc = (json.loads(p.read_text()) for p in (ray_report, local_report))
    assert len(ray_doc["assembled_from"]) == 4 and ray_doc["options"] == local_doc["options"]
    # diff compares these too; spelled out, so that a failure shows what the verdicts were
    verdicts = [
        {
            (r["unlearner"], r["check"]): (
                r["outcome"],
                r["score"],
                [e["verdict"] for e in r["details"].get("per_seed", [])],
            )
            for r in doc["results"]
        }
        for doc in (ray_doc, local_doc)
    ]
    assert verdicts[0] == verdicts[1]
    assert {r["check"] for r in local_doc["results"]} >= {"gaussian_leakage", "utility_preserved"}
    assert all(
        r["seeds"] == [0, 1] and len(r["details"].get("per_seed", [])) == 2
        for r in local_doc["results"]
        if r["outcome"] in ("passed", "failed")
    )
    noop = [r for r in local_doc["results"] if r["unlearner"].endswith("NoOp") and r["check"] == "gaussian_leakage"]
    assert (
        noop and noop[0]["outcome"] == "failed"
    )  # the negative control is caught: a sweep that judged nothing fails here
    assert (tmp_path / "ray" / "calibration-tiny.md").read_text() == (
        tmp_path / "local" / "calibration-tiny.md"
    ).read_text()
