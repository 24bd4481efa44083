"""Seed every global generator a method might draw from, so that identical reruns give identical scores.

Real methods draw from more than torch: Python's `random` (e.g. `random.sample` of a forget subset)
and NumPy's legacy global generator are common. In a worker process the seeded state simply dies
with the worker; in the in-process mode `preserved_global_rng` restores the harness's own state.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily, when CUDA is initialised)


@contextlib.contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Restore `random`, NumPy's and torch's CPU generator state on exit (the in-process mode)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
