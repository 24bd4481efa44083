"""The training loop shared by fixture builds, the reference unlearners and the relearning attacks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.protocol import ExampleSet, TrainingRecipe
from unlearn_audit.training.numerics import LoopNumerics, evaluation_numerics

EpochCallback = Callable[[int, int, float], None]
"""Called after each epoch with (epoch done, epochs total, seconds elapsed)."""


def seeded_model(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a model whose initialisation depends only on `seed` (global RNG left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def resident_batches(
    inputs: torch.Tensor, labels: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One shuffled pass over data already on its device, in `ExampleSet.batches`' order (one
    `randperm` from the CPU `generator` per pass), with the order sent to the device once per pass:
    no host-to-device copy per batch."""
    n = len(labels)
    order = torch.randperm(n, generator=generator).to(labels.device, non_blocking=True)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield inputs[idx], labels[idx]


def train(
    model: nn.Module,
    data: ExampleSet,
    recipe: TrainingRecipe,
    *,
    generator: torch.Generator,
    epochs: int | None = None,
    max_examples: int | None = None,
    device: torch.device | str = "cpu",
    on_epoch: EpochCallback | None = None,
) -> nn.Module:
    """Train `model` in place with the recipe (cross-entropy, its optimizer, lr, batch size).

    `max_examples` caps the example-gradients spent (a budget), cutting the last epoch short.
    A full run (no `epochs`, no `max_examples`) of a recipe with `trainer = "fast"` goes to
    `fast_training.train_fast` (its schedule, augmentation and precision), so that fixture builds
    and the `Retrain` reference train alike; partial runs always use this plain loop, at the recipe's
    constant lr without augmentation, in the recipe's numerics (`training.numerics`: bf16 autocast,
    channels_last and fused optimizer kernels on CUDA for a GPU recipe; fp32 on the CPU).
    """
    if recipe.trainer == "fast" and epochs is None and max_examples is None:
        from unlearn_audit.training.fast import train_fast

        return train_fast(model, data, recipe, generator=generator, device=device, on_epoch=on_epoch)
    if recipe.trainer not in ("plain", "fast"):
        raise ValueError(f"unknown trainer {recipe.trainer!r} (expected 'plain' or 'fast')")
    if recipe.loss != "cross_entropy":
        raise ValueError(f"unsupported loss {recipe.loss!r}")
    numerics = LoopNumerics.of(recipe, device)
    numerics.prepare_model(model.to(device)).train()
    optimizer = recipe.make_optimizer(model.parameters(), **numerics.optimizer_options())
    # The data moves to the device once (a no-op on the CPU); batches are the same as ExampleSet.batches'.
    inputs, labels = data.inputs.to(device), data.labels.to(device)
    total_epochs = recipe.epochs if epochs is None else epochs
    spent = 0
    start = time.perf_counter()
    for epoch in range(total_epochs):
        for x, y in resident_batches(inputs, labels, recipe.batch_size, generator):
            if max_examples is not None:
                if spent >= max_examples:
                    break
                if spent + len(y) > max_examples:
                    x, y = x[: max_examples - spent], y[: max_examples - spent]
            optimizer.zero_grad(set_to_none=True)
            with numerics.autocast():
                logits = model(numerics.inputs(x))
            F.cross_entropy(logits.float(), y).backward()
            optimizer.step()
            spent += len(y)
        if on_epoch is not None:
            on_epoch(epoch + 1, total_epochs, time.perf_counter() - start)
        if max_examples is not None and spent >= max_examples:
            break
    if numerics.channels_last:
        model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Predicted labels, in eval mode, in batches, under the evaluated fixture's numerics (`training.numerics`).

    One copy back to the host at the end, not one per batch."""
    model.eval()
    device = next(model.parameters()).device
    numerics = evaluation_numerics(device)
    with numerics.autocast():
        out = [
            model(numerics.inputs(inputs[i : i + batch_size].to(device))).argmax(1)
            for i in range(0, len(inputs), batch_size)
        ]
    return torch.cat(out).cpu() if out else torch.empty(0, dtype=torch.long)
