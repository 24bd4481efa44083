"""benchmarks/build_estimate.py: each scenario's build, estimated from one machine's loop timings.

The estimate is only worth planning GPU slots with if it predicts what was measured: the committed H200 loop
benchmark and the same day's validation run of `gaussian` (the one scenario built on a GPU so far) check it.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
LOOPS = RESULTS / "gpu-h200-2026-12-04-run2-loops.json"
VALIDATE = RESULTS / "gpu-h200-2026-12-04-run2-validate.json"


@pytest.fixture()
def build_estimate(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # it imports loop_bench, its neighbour
    spec = importlib.util.spec_from_file_location("build_estimate", REPO / "benchmarks" / "build_estimate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_estimate_predicts_the_measured_gaussian_build(build_estimate) -> None:
    rows = {r["scenario"]: r for r in build_estimate.estimate(json.loads(LOOPS.read_text()))}
    measured = json.loads(VALIDATE.read_text())["fixtures"]["gaussian"]
    trained = sum(measured["train_seconds"].values())  # 51.4 s: the two models of the build
    g = rows["gaussian"]
    assert g["models"] == 2 and g["attack_s"] == [0.0, 0.0] and g["attack_source"] is None
    # Estimated 45.5 s and 72 s against measured 51.4 s and 64.7 s: within 25% each (the model leaves out
    # process start-up and counts the relearning evaluations as if they did not overlap the steps).
    assert abs(g["training_s"] - trained) <= 0.25 * trained, (g, trained)
    assert abs(g["references_s"] - measured["reference_seconds"]) <= 0.25 * measured["reference_seconds"]
    assert g["fits"] == "yes"


def test_the_recipes_set_what_each_scenario_trains(build_estimate) -> None:
    rows = {r["scenario"]: r for r in build_estimate.estimate(json.loads(LOOPS.read_text()))}
    assert set(rows) == {"gaussian", "backdoor", "witches_brew", "gradient_canceling", "gradient_canceling_low"}
    # Witches' Brew: original, retrain and 1 surrogate a seed; its 8 clean reference models are shared, trained by
    # the first seed's build only. Gradient Canceling: the attacker's clean model besides the two.
    assert rows["witches_brew"]["models"] == 3 and rows["gradient_canceling"]["models"] == 3
    assert rows["witches_brew"]["shared_models"] == 8 and rows["gradient_canceling"]["shared_models"] == 0
    per_model = rows["gaussian"]["training_s"] / 2
    assert rows["witches_brew"]["training_s"] == pytest.approx(3 * per_model, rel=1e-3)
    assert rows["witches_brew"]["first_build_extra_s"] == pytest.approx(8 * per_model, rel=1e-3)
    # This file has no attack-loop lines: their seconds are counted FLOPs over two measured rates, a range.
    for name in ("witches_brew", "gradient_canceling"):
        low, high = rows[name]["attack_s"]
        assert 0 < low < high and rows[name]["attack_source"].startswith("assumed")
        assert rows[name]["total_s"] == pytest.approx(
            [
                rows[name]["training_s"] + low + rows[name]["references_s"],
                rows[name]["training_s"] + high + rows[name]["references_s"],
            ],
            abs=0.2,
        )


def test_measured_attack_loops_replace_the_assumption(build_estimate) -> None:
    doc = copy.deepcopy(json.loads(LOOPS.read_text()))
    doc["loops"] += [
        {"loop": "Witches' Brew step, 750 poisons", "seconds": 0.5, "steps": 10},
        {"loop": "Witches' Brew step, 750 poisons, bf16 autocast (not used by the build)", "seconds": 0.1, "steps": 10},
        {"loop": "full-gradient pass over 50000 images (GradPC step)", "seconds": 2.0, "steps": 1},
        {"loop": "Gradient Canceling step, 1250 poisons", "seconds": 1.0, "steps": 10},
    ]
    rows = {r["scenario"]: r for r in build_estimate.estimate(doc)}
    # The recipe brews in bf16: 8 restarts x (240 steps + the final loss) at 10 ms; fp32's 50 ms as the alternative.
    assert rows["witches_brew"]["attack_precision"] == "bf16" and rows["witches_brew"]["attack_source"] == "measured"
    assert rows["witches_brew"]["attack_s"] == pytest.approx([19.3] * 2, abs=0.1)
    assert rows["witches_brew"]["attack_s_fp32"] == pytest.approx([96.4] * 2, abs=0.1)
    # Canceling in fp32: 21 full-gradient passes (20 GradPC steps and the clean gradient) + 1001 objectives at
    # 100 ms; this older file did not time canceling in bf16, so there is no alternative.
    assert rows["gradient_canceling"]["attack_precision"] == "fp32"
    assert rows["gradient_canceling"]["attack_s"] == pytest.approx([142.1] * 2, abs=0.1)
    assert "attack_s_bf16" not in rows["gradient_canceling"]


def test_each_scenario_is_estimated_in_its_recipes_attack_precision(build_estimate, monkeypatch) -> None:
    """Each scenario is estimated from its recipe's precision's lines, with the other precision as its alternative."""
    import dataclasses

    from unlearn_audit.scenarios import recipes as recipes_module

    doc = copy.deepcopy(json.loads(LOOPS.read_text()))
    for precision, scale in (("fp32", 1.0), ("bf16", 0.25)):
        doc["loops"] += [
            {
                "loop": f"Witches' Brew step, 750 poisons, {precision}",
                "seconds": 0.5 * scale,
                "steps": 10,
                "attack_precision": precision,
            },
            {
                "loop": f"full-gradient pass over 50000 images (GradPC step), {precision}",
                "seconds": 2.0 * scale,
                "steps": 1,
                "attack_precision": precision,
            },
            {
                "loop": f"Gradient Canceling step, 1250 poisons, {precision}",
                "seconds": 1.0 * scale,
                "steps": 10,
                "attack_precision": precision,
            },
        ]
    load = recipes_module.load_profile_recipes

    def bf16_canceling(profile: str):  # type: ignore[no-untyped-def]
        recipes = dict(load(profile))
        r = recipes["gradient_canceling"]
        recipes["gradient_canceling"] = dataclasses.replace(r, attack={**r.attack, "precision": "bf16"})
        return recipes

    monkeypatch.setattr(recipes_module, "load_profile_recipes", bf16_canceling)
    rows = {r["scenario"]: r for r in build_estimate.estimate(doc)}
    assert rows["gradient_canceling"]["attack_precision"] == "bf16"
    assert rows["gradient_canceling"]["attack_s"] == pytest.approx([142.1 / 4] * 2, abs=0.1)
    assert rows["gradient_canceling"]["attack_s_fp32"] == pytest.approx([142.1] * 2, abs=0.1)
    assert rows["gradient_canceling_low"]["attack_precision"] == "fp32"
    assert rows["gradient_canceling_low"]["attack_s_bf16"] == pytest.approx([142.1 / 4] * 2, abs=0.1)
    assert "attack in fp32" in build_estimate.render(list(rows.values()), doc)


def test_the_command_prints_the_table_and_refuses_other_files(tmp_path: Path) -> None:
    script = REPO / "benchmarks" / "build_estimate.py"
    out = tmp_path / "estimates.json"
    proc = subprocess.run(
        [sys.executable, str(script), str(LOOPS), "--json", str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "witches_brew" in proc.stdout and "fits 240 s" in proc.stdout
    assert len(json.loads(out.read_text())["estimates"]) == 5
    proc = subprocess.run([sys.executable, str(script), str(VALIDATE)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "not a loops file" in proc.stderr
