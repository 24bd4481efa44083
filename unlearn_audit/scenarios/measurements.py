"""Measurements of a fixture's own models, stored in its cache entry and reused by every later run.

Whatever a check measures on the poisoned original or the retrain reference (retrain's relearning
curves and its interpolation path, the original's relearning for the power statement, clean
accuracies, GUS scores) is the same for every method and every run. The session computes it once
and writes it here; later runs and other xdist workers read it back, so a warm audit pays only for
the method's own `unlearn()` and measurements.

Entries are keyed by the measurement's name, the recipe's check options (they are not part of the
fixture's cache key, and e.g. the relearning sizes change what is measured), the device type
(GPU and CPU kernels differ in the last bits) and a fingerprint of the harness's own source code
(a changed measurement function must not be served old values).
Each file is JSON with a SHA-256 of its value, written atomically; a file that does not verify is
ignored and recomputed. Values are encoded without pickle: numbers, strings, lists, dicts, torch
tensors (dtype, shape, values, exactly) and the harness's own frozen dataclasses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch

from unlearn_audit.scenarios.prepared import MEASUREMENTS_DIR, code_fingerprint

_MISSING = object()


def numerics(device: str) -> dict[str, Any]:
    """What changes floating-point results besides the code: torch, its CPU kernels (ATEN_CPU_CAPABILITY),
    threads, and the GPU and cuDNN on CUDA."""
    out: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    try:
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # pragma: no cover - older torch
        out["cpu_capability"] = None
    if device == "cuda" and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
        out["cudnn"] = torch.backends.cudnn.version()
    return out


def encode(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        return {
            "__tensor__": str(t.dtype).removeprefix("torch."),
            "shape": list(t.shape),
            "data": [encode(v) for v in t.reshape(-1).tolist()],
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        if not cls.__module__.startswith("unlearn_audit."):
            raise TypeError(f"cannot store a {cls.__module__}.{cls.__qualname__}")
        return {
            "__dataclass__": f"{cls.__module__}:{cls.__qualname__}",
            "fields": {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)},
        }
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: encode(v) for k, v in value.items()}
        return {"__items__": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    raise TypeError(f"cannot store a {type(value).__name__}")


def decode(data: Any) -> Any:
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    if "__float__" in data:
        return float(data["__float__"])
    if "__tensor__" in data:
        dtype = getattr(torch, data["__tensor__"])
        values = [decode(v) for v in data["data"]]
        return torch.tensor(values, dtype=dtype).reshape(data["shape"])
    if "__dataclass__" in data:
        module, _, qualname = data["__dataclass__"].partition(":")
        if not module.startswith("unlearn_audit."):
            raise ValueError(f"refusing to build {data['__dataclass__']}")
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        if not dataclasses.is_dataclass(cls):
            raise ValueError(f"{data['__dataclass__']} is not a dataclass")
        return cast(Any, cls)(**{k: decode(v) for k, v in data["fields"].items()})
    if "__items__" in data:
        return {decode(k): decode(v) for k, v in data["__items__"]}
    if "__tuple__" in data:
        return tuple(decode(v) for v in data["__tuple__"])
    return {k: decode(v) for k, v in data.items()}


class MeasurementStore:
    """The stored measurements of one model of one cached fixture (`role`: "original" or "retrain")."""

    def __init__(self, fixture_path: Path, role: str, check_options: dict[str, Any], device: str = "cpu") -> None:
        self.root = fixture_path / MEASUREMENTS_DIR
        self.role = role
        self._context = json.dumps(
            {"options": check_options, "device": device, "code": code_fingerprint(), "numerics": numerics(device)},
            sort_keys=True,
            default=str,
        )

    def _path(self, name: str) -> Path:
        digest = hashlib.sha256(f"{self.role}\0{name}\0{self._context}".encode()).hexdigest()[:32]
        return self.root / f"{self.role}-{digest}.json"

    def get(self, name: str) -> Any:
        path = self._path(name)
        try:
            doc = json.loads(path.read_text())
            body = json.dumps(doc["value"], sort_keys=True)
            if doc.get("name") != name or hashlib.sha256(body.encode()).hexdigest() != doc.get("sha256"):
                return _MISSING
            return decode(doc["value"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return _MISSING

    def put(self, name: str, value: Any) -> None:
        try:
            encoded = encode(value)
        except TypeError:
            return  # not storable: it is simply recomputed next time
        body = json.dumps(encoded, sort_keys=True)
        doc = {"name": name, "role": self.role, "sha256": hashlib.sha256(body.encode()).hexdigest(), "value": encoded}
        self.root.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, self._path(name))  # atomic: readers see the old file or the new one
        except OSError:
            Path(tmp).unlink(missing_ok=True)

    def get_or_compute(self, name: str, compute: Callable[[], Any]) -> Any:
        value = self.get(name)
        if value is _MISSING:
            value = compute()
            self.put(name, value)
        return value
