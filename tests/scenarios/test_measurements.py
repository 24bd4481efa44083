"""Stored measurements of a fixture's own models: exact round trips, verification, reuse."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from unlearn_audit.attacks.base import PoisonMeasurement
from unlearn_audit.scenarios.measurements import MeasurementStore, decode, encode


def test_values_round_trip_exactly() -> None:
    value = {
        "curve": [(0, 0.1 + 0.2), (20, float("nan")), (40, -math.inf)],
        "final": PoisonMeasurement(0.25, 0.05, 100, "unit_normal", None),
        "scores": torch.randn(7, generator=torch.Generator().manual_seed(0)),
        "hits": torch.tensor([True, False, True]),
        "grid": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "scalar": torch.tensor(1.5),
        "empty": torch.zeros(0),
        "keys": {1: "one", "__odd": 2},
    }
    back = decode(json.loads(json.dumps(encode(value))))
    assert back["curve"][0] == (0, 0.1 + 0.2) and math.isnan(back["curve"][1][1]) and back["curve"][2][1] == -math.inf
    assert back["final"] == value["final"]
    for key in ("scores", "hits", "grid", "scalar", "empty"):
        assert back[key].dtype == value[key].dtype and torch.equal(back[key], value[key])
    assert back["keys"] == {1: "one", "__odd": 2}


def test_foreign_objects_are_neither_stored_nor_built() -> None:
    with pytest.raises(TypeError):
        encode(object())
    with pytest.raises(ValueError, match="refusing"):
        decode({"__dataclass__": "os:PathLike", "fields": {}})


def test_store_reuses_verifies_and_separates_contexts(tmp_path: Path) -> None:
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"x": torch.ones(3)}

    store = MeasurementStore(tmp_path, "retrain", {"relearning_resistant": {"steps": 100}})
    first = store.get_or_compute("relearn-0-100", compute)
    again = MeasurementStore(tmp_path, "retrain", {"relearning_resistant": {"steps": 100}}).get_or_compute("relearn-0-100", compute)
    assert len(calls) == 1 and torch.equal(first["x"], again["x"])
    # other check options, another role or another device: another entry
    MeasurementStore(tmp_path, "retrain", {"relearning_resistant": {"steps": 50}}).get_or_compute("relearn-0-100", compute)
    MeasurementStore(tmp_path, "original", {"relearning_resistant": {"steps": 100}}).get_or_compute("relearn-0-100", compute)
    MeasurementStore(tmp_path, "retrain", {"relearning_resistant": {"steps": 100}}, "cuda").get_or_compute("relearn-0-100", compute)
    assert len(calls) == 4
    # a tampered file does not verify: it is recomputed and rewritten
    path = store._path("relearn-0-100")
    doc = json.loads(path.read_text())
    doc["value"]["x"]["data"] = [9.0, 9.0, 9.0]
    path.write_text(json.dumps(doc))
    again = store.get_or_compute("relearn-0-100", compute)
    assert len(calls) == 5 and torch.equal(again["x"], torch.ones(3))


def test_a_warm_session_reads_the_reference_measurements_and_gives_the_same_results(tiny_cache: Path, monkeypatch) -> None:
    from unlearn_audit.engine.session import AuditOptions, AuditSession
    import unlearn_audit.training.relearning as relearning

    def run() -> tuple[dict, int]:
        audit = AuditSession(AuditOptions(cache_dir=tiny_cache, isolation="inline"))
        calls = []
        real = relearning.relearn

        def counting(*args, **kwargs):
            calls.append(1)
            return real(*args, **kwargs)

        monkeypatch.setattr("unlearn_audit.checks.relearning_resistant.relearn", counting)
        result, _ = audit.run_check("relearning_resistant", "unlearn_audit.methods:NoOp", "gaussian", 0)
        monkeypatch.undo()
        audit.close()
        return result.to_json(), len(calls)

    first, _ = run()
    second, relearned = run()
    assert second == first
    assert relearned == 3, "only the method's own relearning runs (3 sizes); retrain's and the original's are stored"
