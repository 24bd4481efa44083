"""Linear interpolation between two models of one architecture (linear mode connectivity).

Parameters and floating-point buffers (batch-norm running statistics) are mixed as
(1 - a) * start + a * end; integer buffers (batch counters) are taken from the nearer end.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from unlearn_audit.training.numerics import evaluation_numerics


def interpolate(start: nn.Module, end: nn.Module, alpha: float) -> nn.Module:
    mixed = copy.deepcopy(start)
    s, e = start.state_dict(), end.state_dict()
    state = {}
    for name, a in s.items():
        b = e[name].to(a.device)
        state[name] = torch.lerp(a, b, alpha) if a.is_floating_point() else (a if alpha < 0.5 else b).clone()
    mixed.load_state_dict(state)
    return mixed.eval()


def parameter_distance(a: nn.Module, b: nn.Module) -> float:
    """L2 norm of the difference of the parameters (batch-norm statistics excluded, as in Siddiqui et al.)."""
    total = 0.0
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        if na != nb:
            raise ValueError(f"parameter order differs: {na} vs {nb}")
        total += float((pa.detach().double() - pb.detach().to(pa.device).double()).pow(2).sum())
    return total**0.5


@torch.no_grad()
def per_sample_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Per-sample cross-entropy in eval mode, under the evaluated fixture's numerics (logits reduced in fp32)."""
    model.eval()
    device = next(model.parameters()).device
    numerics = evaluation_numerics(device)
    out = []
    for i in range(0, len(x), batch_size):
        with numerics.autocast():
            logits = model(numerics.inputs(x[i : i + batch_size].to(device)))
        out.append(
            torch.nn.functional.cross_entropy(logits.float(), y[i : i + batch_size].to(device), reduction="none")
        )
    return torch.cat(out).cpu().double() if out else torch.empty(0, dtype=torch.float64)
