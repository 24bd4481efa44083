"""benchmarks/gpu_validate.py without a GPU: its data path (pack, unpack, import, load) on a tiny
generated tree, its stopping of a step at the time limit, and the JSON it writes when time is up.
(The whole stand-in rehearsal, `--standin`, takes minutes: it is run by hand, see README.)"""

from __future__ import annotations

import importlib.util
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

Image = pytest.importorskip("PIL.Image")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_validate.py"


@pytest.fixture(scope="module")
def gv():
    spec = importlib.util.spec_from_file_location("gpu_validate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_pack_then_import_gives_the_pixels_of_the_tree(gv, tmp_path: Path) -> None:
    tree = gv.make_standin_tree(tmp_path / "tree", train=2, test=1)
    archive = tmp_path / "packed" / "images.tar.gz"
    packed = gv.pack_tree(tree, archive, allow_partial=True)
    assert packed["images"] == 30 and archive.is_file() and not list(archive.parent.glob(".*.tmp"))
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    assert [m.name for m in members][:3] == [
        "train/airplane/0000.jpg",
        "train/airplane/0001.jpg",
        "train/automobile/0000.jpg",
    ]
    assert all(m.mtime == 0 and m.isfile() for m in members)

    data = gv.prepare_data(archive, tmp_path / "work", allow_partial=True)
    assert data["unpacked_files"] == 30 and data["complete"] is False
    assert data["shapes"]["train_x"] == [20, 32, 32, 3] and data["loaded"]["test_x"] == [10, 3, 32, 32]
    assert data["loaded"]["train_per_class"] == [2] * 10
    assert not (tmp_path / "work" / "images").exists()  # the unpacked tree is removed once imported
    with np.load(data["imported_file"], allow_pickle=False) as z:
        for x, f in zip(z["train_x"], z["train_files"]):
            assert np.array_equal(x, np.asarray(Image.open(tree / f))), f  # the same decoded JPEG


def test_pack_refuses_a_tree_that_is_not_cifar10(
    gv, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # main() puts its package links first
    tree = gv.make_standin_tree(tmp_path / "tree", train=1, test=1)
    (tree / "train" / "dragon").mkdir()
    assert gv.main(["--pack", str(tree), "--out", str(tmp_path / "a.tar.gz"), "--allow-partial"]) == 2
    assert "unknown class folder(s) dragon" in capsys.readouterr().err
    assert not (tmp_path / "a.tar.gz").exists()


def test_unpack_refuses_members_outside_the_tree(gv, tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("train/../../escape.jpg")
        tar.addfile(info)
    with pytest.raises(ValueError, match="unexpected member"):
        gv.unpack(archive, tmp_path / "out")
    assert not (tmp_path / "escape.jpg").exists()


def test_a_step_is_stopped_at_its_time_limit(gv, tmp_path: Path) -> None:
    step = gv.run_step(
        "sleeper",
        [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
        env=None,
        cwd=tmp_path,
        timeout=2.0,
        log_dir=tmp_path / "logs",
        heartbeat_s=0.5,
    )
    assert step["status"] == "stopped at the deadline" and step["seconds"] < 15
    assert "started" in Path(step["log"]).read_text()


@pytest.mark.parametrize(("code", "ok_codes", "status"), [(0, (0,), "ok"), (1, (0, 1), "ok"), (4, (0, 1), "failed")])
def test_a_step_that_exits_with_another_code_failed_and_says_why(
    gv, tmp_path: Path, capsys: pytest.CaptureFixture[str], code: int, ok_codes: tuple[int, ...], status: str
) -> None:
    step = gv.run_step(
        "audit",
        [sys.executable, "-c", f"import sys; print('ERROR: cannot import the method'); sys.exit({code})"],
        env=None,
        cwd=tmp_path,
        timeout=60.0,
        log_dir=tmp_path / "logs",
        ok_codes=ok_codes,
    )
    assert step["status"] == status and step["rc"] == code
    echoed = [
        line for line in capsys.readouterr().out.splitlines() if line.endswith("audit: ERROR: cannot import the method")
    ]
    assert bool(echoed) is (status == "failed")  # unprefixed: seen where the step's own output is filtered out


def test_the_json_is_written_when_no_time_is_left(gv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    rc = gv.main(["--standin", "--out", str(tmp_path / "out"), "--deadline-s", "1", "--work", str(tmp_path / "work")])
    doc = json.loads((tmp_path / "out" / "gpu_validate.json").read_text())
    assert rc == 0 and doc["finished"] and not doc["all_done"] and doc["profile"] == "cifar10-resnet18-standin"
    assert [s["step"] for s in doc["skipped"]] == ["data", *(f"build {s}" for s in gv.SCENARIOS)]
    assert doc["environment"]["missing_modules"] == [] and not doc["errors"]


def _earlier(tmp_path: Path, mode: str, audits: list[tuple[str, str]]) -> Path:
    doc = {
        "mode": mode,
        "fixtures": {sc: {"validation": {"effective": True}} for _, sc in audits},
        "audits": [
            {"method": m, "scenario": sc, "status": "ok", "tests": [{"check": "x", "outcome": "passed"}]}
            for m, sc in audits
        ],
    }
    path = tmp_path / f"earlier-{mode}.json"
    path.write_text(json.dumps(doc))
    return path


def test_the_plan_continues_from_earlier_runs(gv, tmp_path: Path) -> None:
    earlier = gv.load_earlier(
        [str(_earlier(tmp_path, "gpu", [("NoOp", "gaussian"), ("Retrain", "gaussian"), ("NoOp", "backdoor")]))]
    )
    assert gv.plan(["gaussian", "backdoor"], ["NoOp", "Retrain"], earlier) == [
        "build backdoor",
        "audit Retrain on backdoor",
    ]
    assert gv.plan(["gaussian"], ["NoOp", "Retrain"], earlier) == []
    with pytest.raises(SystemExit, match="cannot stand in"):
        gv.load_earlier([str(_earlier(tmp_path, "standin", []))], "gpu")


def test_the_committed_gpu_runs_resume(gv, capsys: pytest.CaptureFixture) -> None:
    results = sorted((SCRIPT.parent / "results").glob("*-validate.json"))
    assert results
    assert (
        gv.main(
            [
                *(a for r in results for a in ("--resume", str(r))),
                "--plan",
                "--scenario",
                "gaussian",
                "--methods",
                "NoOp",
                "GradientDescent",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == "nothing left to do"


def test_a_resumed_run_skips_what_was_done(gv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    earlier = _earlier(tmp_path, "standin", [("NoOp", "gaussian")])
    rc = gv.main(
        [
            "--standin",
            "--out",
            str(tmp_path / "out"),
            "--work",
            str(tmp_path / "work"),
            "--scenario",
            "gaussian",
            "--methods",
            "NoOp",
            "--resume",
            str(earlier),
        ]
    )
    doc = json.loads((tmp_path / "out" / "gpu_validate.json").read_text())
    assert rc == 0 and doc["finished"] and not doc["steps"], "nothing was built or audited again"
    assert doc["skipped"] == [{"step": "build gaussian and its audits", "why": f"done in {earlier}"}]
    assert doc["earlier"]["audits"] == {"NoOp on gaussian": str(earlier)}


def test_check_env_names_what_is_missing_and_how_to_carry_it(
    gv, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(gv, "NEEDED_MODULES", (*gv.NEEDED_MODULES, "sklearn_not_here", "PIL"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert gv.main(["--check-env"]) == 1
    err = capsys.readouterr().err
    assert "missing: sklearn_not_here" in err and "pip download --no-deps" in err and "--target /tmp/site" in err


@pytest.mark.parametrize(
    ("selected", "expected"),
    [
        (["gradient_canceling"], {"gradient_canceling"}),
        (["gradient_canceling_low"], {"gradient_canceling_low"}),
        (["gradient_canceling", "gradient_canceling_low"], {"gradient_canceling", "gradient_canceling_low"}),
        (["gaussian", "backdoor"], {"gaussian", "backdoor"}),
    ],
)
def test_the_keyword_collects_exactly_the_scenarios_asked_for(
    gv, tmp_path: Path, selected: list[str], expected: set[str]
) -> None:
    """The audit step's `-k`, through pytest's own matching on the conformance suite's real test ids (the
    `tiny` profile has the same five scenario names): `gradient_canceling` must not also select `_low`."""
    import subprocess

    collected = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "--unlearner",
            "unlearn_audit.methods:NoOp",
            "-k",
            gv.scenario_keyword(selected),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ids = [line for line in collected.splitlines() if "::" in line]
    assert ids
    assert {line.rsplit("-", 2)[-2] for line in ids} == expected


def test_a_fixture_summary_names_the_build(gv, tmp_path: Path) -> None:
    """A later slot on another machine rebuilds the fixtures: the JSON says which build each run audited."""
    entry = tmp_path / "cifar10-resnet18" / "gaussian-seed0-0123456789abcdef"
    entry.mkdir(parents=True)
    environment = {"torch": "2.11.0", "device": "cuda", "machine": "x86_64", "gpu": "NVIDIA H200", "cuda": "12.8"}
    meta = {"sha256": {"weights.safetensors": "a" * 64}, "build_environment": {**environment, "cudnn": 91002}}
    (entry / "meta.json").write_text(json.dumps(meta))
    summary = gv.fixture_summary(tmp_path, "cifar10-resnet18", "gaussian")
    from unlearn_audit.scenarios.provenance import fixture_id

    assert summary["fixture_id"] == fixture_id(meta)
    assert summary["built_with"] == "torch 2.11.0 on cuda (x86_64, NVIDIA H200, CUDA 12.8, cuDNN 91002)"
