"""The GPU tables are generated from the committed benchmark JSON, and the docs render them at build time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
PAGE = REPO / "docs" / "explanation" / "gpu.md"


def _load(name: str, path: Path):  # benchmarks/ and docs/_hooks/ are not packages: load the modules from their files
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gpu_table():
    return _load("gpu_table", REPO / "benchmarks" / "gpu_table.py")


def test_the_generator_renders_every_committed_run() -> None:
    gpu_table = _gpu_table()
    loops = sorted(RESULTS.glob("*-loops.json"))
    assert loops, "no committed GPU loop benchmark"
    rendered = gpu_table.render_table(RESULTS)
    for path in loops:
        assert path.name.removesuffix("-loops.json") in rendered, path.name
    for path in sorted(RESULTS.glob("*-validate.json")):
        assert f"| {path.name.removesuffix('-validate.json')} |" in rendered, path.name
    assert "| loop |" in rendered and "| run | scenario |" in rendered
    assert "_no loop benchmark committed_" not in rendered and "_no validation committed_" not in rendered


def test_the_generator_says_when_nothing_is_committed(tmp_path: Path) -> None:
    rendered = _gpu_table().render_table(tmp_path)
    assert "_no loop benchmark committed_" in rendered and "_no validation committed_" in rendered


def test_the_docs_page_renders_the_tables_from_the_committed_results() -> None:
    page = PAGE.read_text()
    assert "<!-- gpu-tables -->" in page, "the GPU page lost its placeholder"
    rendered = _load("docs_hook_generate", REPO / "docs" / "_hooks" / "generate.py").render(page)
    assert "<!-- gpu-tables -->" not in rendered
    assert _gpu_table().render_table(RESULTS).strip() in rendered


def test_every_committed_loop_line_has_its_figures() -> None:
    import json

    for path in RESULTS.glob("*-loops.json"):
        doc = json.loads(path.read_text())
        assert doc["device"] and doc["date"] and doc["loops"], path.name
        for row in doc["loops"]:
            assert (
                row["seconds"] > 0 and row["steps"] > 0 and row["tflops"] is not None and row["floor_ratio"] is not None
            ), (path.name, row["loop"])


def test_a_recipe_sweep_is_rendered_with_its_skips_and_failures(tmp_path: Path) -> None:
    import json

    row = {
        "variant": "crop_flip-20",
        "test_accuracy": 0.9412,
        "tta_flip_accuracy": 0.9455,
        "gus_z": 6.31,
        "seconds": 21.5,
        "first_epoch_seconds": 2.2,
        "epoch_seconds": 1.01,
    }
    doc = {
        "rows": [row],
        "skipped": [{"variant": "flip_cutout-30", "why": "10 s left"}],
        "errors": [{"variant": "crop_flip-20-compiled", "error": "BackendCompilerFailed: no C compiler"}],
    }
    (tmp_path / "gpu-h200-2026-12-09-sweep.json").write_text(json.dumps(doc))
    rendered = _gpu_table().render_table(tmp_path)
    assert "| gpu-h200-2026-12-09 | crop_flip-20 | 94.12% (94.55%) | 6.3 | 21.5 (2.2, 1.01) |" in rendered
    assert "| flip_cutout-30 | skipped: 10 s left |" in rendered and "failed: BackendCompilerFailed" in rendered
    assert "_no recipe sweep committed_" in _gpu_table().render_table(tmp_path / "empty")


def test_each_run_states_the_chip_rate_its_ratios_are_against(tmp_path: Path) -> None:
    """A run measured on its machine says so; one from before the rate was measured is read as the H200's."""
    import json

    row = {"loop": "fast trainer (per epoch after the first)", "ms_per_step": 2.0, "tflops": 300.0, "floor_ratio": 2.6}
    measured = {"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "loops": [row], "chip_flops": {}}
    measured["chip_flops"] = {"flops": 702.4e12, "dtype": "bfloat16", "source": "measured"}
    older = {"device": "cuda", "gpu": "NVIDIA H200", "loops": [row], "chip_bf16_flops": 790e12}
    (tmp_path / "gpu-h100-2026-12-09-loops.json").write_text(json.dumps(measured))
    (tmp_path / "gpu-h200-2026-12-04-loops.json").write_text(json.dumps(older))
    rendered = _gpu_table().loops_table(tmp_path)
    assert "- gpu-h100-2026-12-09: NVIDIA H100 80GB HBM3" in rendered
    assert "floor: half of 702 TFLOP/s bfloat16 (measured)" in rendered
    assert "floor: half of 790 TFLOP/s bf16 (the H200's, not measured)" in rendered
