"""benchmarks/recipe_sweep.py without a GPU: its baseline is the committed recipe, and on the CPU stand-in it
trains the variants asked for, measures them and writes its JSON; a deadline skips what cannot run."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "recipe_sweep.py"


@pytest.fixture(scope="module")
def sweep():
    sys.path.insert(0, str(SCRIPT.parent))  # it imports gpu_validate from beside it
    try:
        spec = importlib.util.spec_from_file_location("recipe_sweep", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        assert spec.loader is not None
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


def test_the_baseline_variant_is_the_committed_gaussian_recipe_and_every_variant_is_valid(sweep) -> None:
    from unlearn_audit.scenarios.recipes import load_profile_recipes

    real = load_profile_recipes("cifar10-resnet18")["gaussian"]
    assert sweep.variant_recipe(real, sweep.VARIANTS["flip-20"], standin=False) == real
    for name, fields in sweep.VARIANTS.items():
        recipe = sweep.variant_recipe(real, fields, standin=False)  # refuses unknown training values
        assert recipe.attack == real.attack and recipe.data == real.data, name
        assert all(getattr(recipe.training, k) == v for k, v in fields.items()), name


def run(tmp_path: Path, *args: str) -> tuple[int, dict]:
    out = tmp_path / "sweep.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--standin", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    return proc.returncode, json.loads(out.read_text())


def test_the_standin_rehearsal_measures_each_variant_asked_for(tmp_path: Path) -> None:
    rc, doc = run(tmp_path, "--variant", "flip-20", "--variant", "flip_cutout-20")
    assert rc == 0 and not doc["errors"] and not doc["skipped"]
    assert [r["variant"] for r in doc["rows"]] == ["flip-20", "flip_cutout-20"]
    assert [r["training"]["augmentation"] for r in doc["rows"]] == ["flip", "flip_cutout"]
    for row in doc["rows"]:
        assert 0.0 <= row["test_accuracy"] <= 1.0 and 0.0 <= row["tta_flip_accuracy"] <= 1.0
        assert row["test_images"] == 400 and row["epochs"] == 3 and row["compile"] == "none"  # CPU: never compiled
        assert row["gus_z"] == row["gus_z"] and row["attack_effective"] in (True, False)  # a number, a verdict
        assert 0 < row["first_epoch_seconds"] <= row["seconds"] and row["epoch_seconds"] > 0
    assert doc["profile"] == "cifar10-resnet18-standin" and doc["device"] == "cpu"


def test_no_time_left_skips_every_variant_and_still_writes_the_json(tmp_path: Path) -> None:
    rc, doc = run(tmp_path, "--deadline-s", "0", "--variant", "flip-20", "--variant", "crop_flip-20")
    assert rc == 0 and doc["rows"] == []
    assert [s["variant"] for s in doc["skipped"]] == ["flip-20", "crop_flip-20"]


def test_unknown_variants_are_refused_by_name(sweep, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(["--standin", "--out", "x.json", "--variant", "flip-99"])
    assert exit_info.value.code == 2 and "flip-99" in capsys.readouterr().err
    assert sweep.main(["--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in sweep.VARIANTS)
