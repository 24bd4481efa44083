"""The README's GPU tables are generated from the committed benchmark JSON and must stay equal to it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _gpu_table():  # benchmarks/ is not a package: load the module from its file
    spec = importlib.util.spec_from_file_location("gpu_table", REPO / "benchmarks" / "gpu_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_gpu_tables_match_the_committed_results() -> None:
    gpu_table = _gpu_table()
    results = REPO / "benchmarks" / "results"
    assert sorted(results.glob("*-loops.json")), "no committed GPU loop benchmark"
    readme = (REPO / "README.md").read_text()
    assert gpu_table.readme_block(readme) == gpu_table.render_table(results).strip(), (
        "README's GPU tables are stale: replace the block with `python benchmarks/bench_cifar.py --table`")


def test_every_committed_loop_line_has_its_figures() -> None:
    import json

    for path in (REPO / "benchmarks" / "results").glob("*-loops.json"):
        doc = json.loads(path.read_text())
        assert doc["device"] and doc["date"] and doc["loops"], path.name
        for row in doc["loops"]:
            assert row["seconds"] > 0 and row["steps"] > 0 and row["tflops"] is not None and row["floor_ratio"] is not None, (
                path.name, row["loop"])
