"""What the harness does with the weights a method returned, in either isolation mode.

The weights are loaded into a fresh model of the fixture's architecture (no hooks, frozen flags,
dtype or identity of the method's object survive into the checks) and compared with the reference
models the harness holds: a method that found the retrain reference (on disk, or in the harness's
memory in the in-process mode) and returned it, however perturbed, must not pass as an unlearner
(`engine.copy_detection`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from unlearn_audit.profiles.models import nonfinite_tensors
from unlearn_audit.scenarios.fixture import Fixture


def audited_copy(
    state: Mapping[str, torch.Tensor], fixture: Fixture, device: torch.device
) -> tuple[nn.Module | None, str | None]:
    """A fresh model with the returned weights, or None and why they are unusable."""
    try:
        with torch.random.fork_rng(devices=[]):  # its throwaway initialisation must not move the global RNG
            model = fixture.factory().to(device)
        model.load_state_dict(dict(state))
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        return None, f"unlearn() returned weights that do not load into the architecture: {exc}"
    bad = nonfinite_tensors(model)
    if bad:
        return None, f"unlearn() returned a model with NaN/Inf values in {len(bad)} tensors, e.g. {bad[:3]}"
    return model.eval(), None


def identical_weights(model: nn.Module, other: nn.Module) -> bool:
    """Whether two models hold bit-identical tensors under the same names (parameters and buffers).

    Measurements are deterministic functions of the weights, so a returned model identical to the
    poisoned original (a method that changed nothing) has exactly the original's measurements, which
    the cache entry already holds: the session then reuses them instead of recomputing them.
    """
    mine, theirs = model.state_dict(), other.state_dict()
    return mine.keys() == theirs.keys() and all(
        v.dtype == theirs[k].dtype and v.shape == theirs[k].shape and torch.equal(v, theirs[k].to(v.device))
        for k, v in mine.items()
    )
