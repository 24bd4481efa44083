"""The relearning attack of Siddiqui et al.: fine-tune an unlearned model on the retain set plus
a few forget examples, and watch whether the forgotten poison comes back.

The attacker uses the original recipe (optimizer, learning rate, batch size) for a fixed number
of steps. Method and retrain reference get the identical attack: the same relearning examples,
the same batch order (one seed), the same number of steps.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.protocol import ExampleSet, TrainingRecipe


def relearn(
    model: nn.Module,
    data: ExampleSet,
    recipe: TrainingRecipe,
    *,
    steps: int,
    seed: int,
    measure: Callable[[nn.Module], float],
    eval_every: int,
    device: torch.device | str = "cpu",
) -> list[tuple[int, float]]:
    """Fine-tune a copy of `model` on `data` for `steps` steps; return [(step, measure(model))] along the way."""
    attacked = copy.deepcopy(model).to(device)
    optimizer = recipe.make_optimizer(attacked.parameters())
    generator = torch.Generator().manual_seed(seed)
    curve = [(0, measure(attacked))]
    step = 0
    while step < steps:
        attacked.train()
        for x, y in data.batches(recipe.batch_size, generator=generator, device=device):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(attacked(x), y).backward()
            optimizer.step()
            step += 1
            if step % eval_every == 0 or step == steps:
                curve.append((step, measure(attacked)))
                attacked.train()
            if step >= steps:
                break
    attacked.eval()
    return curve


def relearning_set(retain: ExampleSet, forget: ExampleSet, relearn_positions: torch.Tensor) -> ExampleSet:
    """The attacker's data: the whole retain set plus the chosen forget examples."""
    return ExampleSet(
        torch.cat([retain.inputs, forget.inputs[relearn_positions]]),
        torch.cat([retain.labels, forget.labels[relearn_positions]]),
    )
