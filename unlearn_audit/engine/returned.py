"""What the harness does with the weights a method returned, in either isolation mode.

The weights are loaded into a fresh model of the fixture's architecture (no hooks, frozen flags,
dtype or identity of the method's object survive into the checks) and compared with the reference
models the harness holds: a method that found the retrain reference (on disk, or in the harness's
memory in the in-process mode) and returned it must not pass as an unlearner.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from unlearn_audit.profiles.models import nonfinite_tensors
from unlearn_audit.scenarios.fixture import Fixture

REFERENCE_MATCH_TOLERANCE = 0.01
"""A returned model closer to the retrain reference than 1% of its scale is a copy of the reference.
The scale is the smaller of the reference's own norm and the poisoned original's distance to it:
legitimate unlearning from the original stays about that far away, and an independent retraining
lands about as far from it as its own norm (from scratch) or as the original (from a shared
pretrained start). The minimum keeps the rule meaningful when the original exploded (Gradient
Canceling fixtures with weight norms of 1e5, where retraining is 1e-4 of the separation away)."""


def audited_copy(state: Mapping[str, torch.Tensor], fixture: Fixture, device: torch.device) -> tuple[nn.Module | None, str | None]:
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


def _flat(model: nn.Module) -> torch.Tensor:
    parts = [v.detach().float().flatten().cpu() for k, v in model.state_dict().items()
             if v.is_floating_point() and not k.endswith("num_batches_tracked")]
    return torch.cat(parts) if parts else torch.zeros(0)


def reference_distance(model: nn.Module, fixture: Fixture, reference: nn.Module | None = None) -> float:
    """L2 distance to a reference model (default: retrain), in units of min(its norm, the original's distance to it)."""
    ref = _flat(fixture.retrain if reference is None else reference)
    scale = min(float(ref.norm()), float((_flat(fixture.original) - ref).norm()))
    if scale == 0.0:
        return float("inf")
    return float((_flat(model) - ref).norm()) / scale


def reference_distances(model: nn.Module, fixture: Fixture) -> dict[str, float]:
    """`reference_distance` to every reference model the harness holds (retrain and the clean models)."""
    return {name: reference_distance(model, fixture, ref) for name, ref in fixture.reference_models().items()}


def reference_copy_problem(distance: float, name: str = "retrain") -> str | None:
    """Why a model at this `reference_distance` from reference `name` counts as that reference, or None."""
    if distance <= REFERENCE_MATCH_TOLERANCE:
        what = "retrain reference" if name == "retrain" else f"reference model {name!r} (a clean model)"
        return (f"unlearn() returned the harness's own {what} (distance to it {distance:.2g} of its "
                f"scale, tolerance {REFERENCE_MATCH_TOLERANCE:g}): a method must not read the harness's "
                "reference models")
    return None
