"""Gaussian data poisoning (Pawelczyk et al., Section 4.3).

The attacker adds i.i.d. Gaussian noise to the inputs of a random subset of training samples
and keeps the noise vectors secret. The noise carries no signal about the task, so it barely
changes accuracy, but training leaks it into the model, where the Gaussian Unlearning Score
(`unlearn_audit.metrics.gaussian_unlearning_scores`) detects it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GaussianPoison:
    """Which training samples were poisoned, and the secret noise added to each (unit variance)."""

    indices: torch.Tensor  # long, (k,)
    noise: torch.Tensor  # float, (k, *input_shape), entries i.i.d. N(0, 1)
    sigma: float  # the poison is x + sigma * noise


def make_gaussian_poison(
    train_x: torch.Tensor, num_poisons: int, sigma: float, generator: torch.Generator
) -> tuple[torch.Tensor, GaussianPoison]:
    """Return (poisoned copy of `train_x`, secret). Inputs are not clipped: the noise stays exactly Gaussian."""
    if not 0 < num_poisons <= len(train_x):
        raise ValueError(f"num_poisons must be in [1, {len(train_x)}], got {num_poisons}")
    indices = torch.randperm(len(train_x), generator=generator)[:num_poisons].sort().values
    noise = torch.randn((num_poisons, *train_x.shape[1:]), generator=generator)
    poisoned = train_x.clone()
    poisoned[indices] += sigma * noise
    return poisoned, GaussianPoison(indices, noise, float(sigma))
