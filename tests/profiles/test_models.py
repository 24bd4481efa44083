"""The returned model's architecture check, and what it says when a wrapper hides the right one."""

from __future__ import annotations

import torch
from torch import nn

from unlearn_audit.profiles.models import same_architecture


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def test_the_same_architecture_passes_and_another_is_named() -> None:
    assert same_architecture(_net(), _net()) is None
    problem = same_architecture(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), _net()) or ""
    assert "another architecture" in problem and "missing" in problem
    assert "expected a torch.nn.Module" in (same_architecture(object(), _net()) or "")  # type: ignore[arg-type]


def test_a_wrapped_model_is_told_to_return_what_it_wraps() -> None:
    class Holder(nn.Module):  # what torch.compile's and DataParallel's wrappers do to the names
        def __init__(self) -> None:
            super().__init__()
            self.inner = _net()

    problem = same_architecture(Holder(), _net()) or ""
    assert "every name has the prefix 'inner.'" in problem and "return the module it wraps" in problem
    compiled = torch.compile(_net(), backend="eager")
    assert "return the module it wraps" in (same_architecture(compiled, _net()) or "")
