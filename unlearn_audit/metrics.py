"""Measurements on a model: accuracy, attack success, Gaussian Unlearning Score.

Each function returns raw per-sample outcomes; `stats` turns them into estimates with
uncertainties and verdicts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.training.loops import predict
from unlearn_audit.training.numerics import evaluation_numerics


def correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample correctness (bool) on (x, y)."""
    return predict(model, x) == y


def hits_target(model: nn.Module, x: torch.Tensor, target_class: int) -> torch.Tensor:
    """Per-sample success of a targeted attack: prediction equals the target class."""
    return predict(model, x) == target_class


def gaussian_unlearning_scores(
    model: nn.Module, base_x: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """Per-poison Gaussian Unlearning Score (Pawelczyk et al., Sec. 4.3 and App. A.1.4).

    s_i = -<g_i, xi_i> / ||g_i||, with g_i the gradient of the loss with respect to the input at
    the *clean* base image and xi_i the secret unit-variance noise. If the model does not depend
    on xi_i, s_i ~ N(0, 1) exactly, whatever the model; a model trained on x_i + sigma xi_i has
    lowered its loss along xi_i, which makes s_i positive (the sign is chosen so that leakage is
    positive). Samples whose input gradient is exactly zero carry no information and are
    returned as NaN (dropping them keeps the null distribution exact).
    """
    model.eval()
    device = next(model.parameters()).device
    numerics = evaluation_numerics(device)
    scores = []
    for i in range(0, len(base_x), batch_size):
        x = numerics.inputs(base_x[i : i + batch_size].to(device)).clone().requires_grad_(True)
        y = labels[i : i + batch_size].to(device)
        with torch.enable_grad():
            with numerics.autocast():
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
        g = grad.flatten(1)
        if g.device.type not in ("cpu", "cuda"):  # float64 is not available on every device (MPS)
            g = g.cpu()
        g = g.double()
        xi = noise[i : i + batch_size].flatten(1).to(g.device).double()
        norm = g.norm(dim=1)
        s = -(g * xi).sum(1) / norm
        s[norm == 0] = float("nan")
        scores.append(s)
    # One copy back to the host, not one per batch.
    return torch.cat(scores).cpu() if scores else torch.empty(0, dtype=torch.float64)
