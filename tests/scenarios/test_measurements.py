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
    again = MeasurementStore(tmp_path, "retrain", {"relearning_resistant": {"steps": 100}}).get_or_compute(
        "relearn-0-100", compute
    )
    assert len(calls) == 1 and torch.equal(first["x"], again["x"])
    # other check options, another role or another device: another entry
    MeasurementStore(tmp_path, "retrain", {"relearning_resistant": {"steps": 50}}).get_or_compute(
        "relearn-0-100", compute
    )
    MeasurementStore(tmp_path, "original", {"relearning_resistant": {"steps": 100}}).get_or_compute(
        "relearn-0-100", compute
    )
    MeasurementStore(tmp_path, "retrain", {"relearning_resistant": {"steps": 100}}, "cuda").get_or_compute(
        "relearn-0-100", compute
    )
    assert len(calls) == 4
    # a tampered file does not verify: it is recomputed and rewritten
    path = store._path("relearn-0-100")
    doc = json.loads(path.read_text())
    doc["value"]["x"]["data"] = [9.0, 9.0, 9.0]
    path.write_text(json.dumps(doc))
    again = store.get_or_compute("relearn-0-100", compute)
    assert len(calls) == 5 and torch.equal(again["x"], torch.ones(3))


def _run_relearning(cache: Path, monkeypatch: pytest.MonkeyPatch, spec: str, twins: bool = True) -> tuple[dict, int]:
    """`relearning_resistant` on tiny/gaussian seed 0 in a fresh inline session: the result and how many
    relearning runs it computed (the rest came from the cache entry or the session's memo)."""
    import unlearn_audit.training.relearning as relearning
    from unlearn_audit.engine.session import AuditOptions, AuditSession

    audit = AuditSession(AuditOptions(cache_dir=cache, isolation="inline"))
    calls = []
    real = relearning.relearn_many

    def counting(models, *args, **kwargs):
        calls.extend(1 for _ in models)  # one relearning run per (model, size)
        return real(models, *args, **kwargs)

    monkeypatch.setattr("unlearn_audit.checks.relearning_resistant.relearn_many", counting)
    if not twins:
        monkeypatch.setattr("unlearn_audit.engine.session.identical_weights", lambda *a: False)
    result, _ = audit.run_check("relearning_resistant", spec, "gaussian", 0)
    monkeypatch.undo()
    audit.close()
    return result.to_json(), len(calls)


def test_a_warm_session_reads_the_reference_measurements_and_gives_the_same_results(
    tiny_cache: Path, monkeypatch
) -> None:
    first, _ = _run_relearning(tiny_cache, monkeypatch, "unlearn_audit.methods:GradientDescent")
    second, relearned = _run_relearning(tiny_cache, monkeypatch, "unlearn_audit.methods:GradientDescent")
    assert second == first
    assert relearned == 3, "only the method's own relearning runs (3 sizes); retrain's and the original's are stored"


def test_a_model_returned_unchanged_is_measured_as_the_original_with_identical_results(
    tiny_cache: Path, monkeypatch
) -> None:
    computed, relearned = _run_relearning(tiny_cache, monkeypatch, "unlearn_audit.methods:NoOp", twins=False)
    reused, reused_runs = _run_relearning(tiny_cache, monkeypatch, "unlearn_audit.methods:NoOp")
    assert relearned == 3 and reused_runs == 0, "NoOp's weights are the original's: its stored curves are reused"
    assert reused == computed and reused["verdict"] == "fail"


def test_identical_weights_means_every_tensor_bit_for_bit() -> None:
    from unlearn_audit.engine.returned import identical_weights

    a = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    b = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    b.load_state_dict(a.state_dict())
    assert identical_weights(a, b)
    with torch.no_grad():
        b[0].weight[0, 0] = torch.nextafter(b[0].weight[0, 0], torch.tensor(2.0))  # one ulp
    assert not identical_weights(a, b)
    b.load_state_dict(a.state_dict())
    b[1].num_batches_tracked += 1  # buffers count too
    assert not identical_weights(a, b)
    assert not identical_weights(a, torch.nn.Sequential(torch.nn.Linear(3, 2)))
