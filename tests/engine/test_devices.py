"""Device resolution: one GPU per xdist worker."""

from __future__ import annotations

import pytest

from unlearn_audit.engine.devices import resolve_device, xdist_worker_index


@pytest.mark.parametrize(
    ("requested", "worker", "gpus", "expected"),
    [
        (None, None, 0, "cpu"),
        (None, None, 2, "cuda:0"),
        (None, "gw0", 4, "cuda:0"),
        (None, "gw3", 4, "cuda:3"),
        ("cuda", "gw5", 4, "cuda:1"),  # more workers than GPUs: round-robin
        ("cuda:2", "gw0", 4, "cuda:2"),  # explicit index: as given
        ("cpu", "gw1", 4, "cpu"),
        ("cuda", None, 0, "cuda"),  # no GPU visible: left to torch to report
    ],
)
def test_one_gpu_per_xdist_worker(requested: str | None, worker: str | None, gpus: int, expected: str) -> None:
    assert resolve_device(requested, worker, gpus) == expected


def test_xdist_worker_index() -> None:
    assert (
        xdist_worker_index("gw12") == 12 and xdist_worker_index("master") is None and xdist_worker_index(None) is None
    )
