"""The fast trainer of the GPU profile: a recipe with `trainer = "fast"` trains its fixtures here.

Fixture builds of `cifar10-resnet18` train a ResNet-18 on 50,000 images twice per scenario (the
poisoned original and the retrain reference), plus the attacker's clean model for Gradient
Canceling. The papers train 100 epochs; the target here is >= 93% clean test accuracy in <= 120 s
per model on one H100-class GPU. What makes it fast (airbench-style, Keller Jordan 2024):

- the whole training set lives on the device as one tensor: no DataLoader, no host-to-device copy
  per batch, no worker processes;
- augmentation on the device, vectorised over the whole epoch: random crop with 4-pixel zero
  padding (`random_crop`) and horizontal flip (`random_flip`), one draw per example per epoch;
- the recipe's numerics (`training.numerics`): channels_last memory format, bfloat16 autocast and a
  fused optimizer on CUDA; fp32 in the contiguous format on the CPU;
- a short schedule: SGD with Nesterov momentum, label smoothing, batch 512, a linear warm-up to
  `recipe.lr` over `recipe.warmup_epochs` then a linear decay to 0 at the last step.

Randomness: the example order is drawn from the caller's CPU `generator` (as in the plain loop);
augmentation draws from a device generator seeded from it, so a run is reproducible on one device
(bit-exactness across devices is not promised: cuDNN and bf16 differ from CPU fp32).

Only full training runs use this loop (`training.train` without `epochs`/`max_examples`: fixture
builds, the attacker's clean model, and the `Retrain` reference unlearner, which thereby retrains
exactly as the fixture's reference was trained). Budgeted fine-tuning (GD and the other reference
unlearners) uses the plain loop (`training.loops.train`) with `recipe.make_optimizer` at the constant
`recipe.lr`, plain cross-entropy and no augmentation, in the same numerics; the relearning attack has
its own loop (`training.relearning`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.protocol import AUGMENTATIONS, ExampleSet, TrainingRecipe
from unlearn_audit.training.compile_check import check_compiled_gradients
from unlearn_audit.training.numerics import LoopNumerics

EpochCallback = Callable[..., None]
"""Called after each epoch as (epoch done, epochs total, seconds elapsed, status=str)."""

CUTOUT_SIZE = 8
"""The side of "flip_cutout"'s square. Cutout masks part of an image but never moves what is left against
the image, as a crop does: a candidate for the Gaussian scenario, whose secret noise a translation
misaligns."""


@dataclass(frozen=True)
class FastTrainStats:
    """What one fast training run did (recorded in the fixture's metadata)."""

    epochs: int
    steps: int
    seconds: float
    first_epoch_seconds: float  # includes torch.compile's compilation when the run is compiled
    train_accuracy: float  # on the augmented batches of the last epoch, in train mode
    device: str
    precision: str
    peak_memory_bytes: int | None  # torch.cuda.max_memory_allocated on CUDA, else None
    compile: str = "none"  # the torch.compile mode used ("none" off CUDA, whatever the recipe says)
    # compiled runs: the first batch's gradient check, the worst parameter's distance over its allowance (<= 1)
    compiled_gradient_excess: float | None = None  # see `training.compile_check`


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Per-example random crop of `x` (N, C, H, W) after zero-padding each side by `padding`.

    Vectorised as one gather: example i is the window of the padded image at offset (dy_i, dx_i),
    dy, dx uniform in [0, 2 * padding].
    """
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=x.device)
    rows = (offsets[:, 0:1] + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, c, h, w)
    cols = (offsets[:, 1:2] + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, c, h, w)
    # Gather rows, then columns: index the padded tensor with (n, c, h, W+2p) then (n, c, h, w).
    by_rows = padded.gather(2, rows[..., :1].expand(n, c, h, w + 2 * padding))
    return by_rows.gather(3, cols)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each example of `x` (N, C, H, W) horizontally with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def random_cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one `size` x `size` square of each example of `x` (N, C, H, W), centred uniformly on the image
    (clipped at its borders, so a square near an edge covers less)."""
    n, _, h, w = x.shape
    corner = torch.stack(
        [
            torch.randint(0, h, (n,), generator=generator, device=x.device),
            torch.randint(0, w, (n,), generator=generator, device=x.device),
        ],
        1,
    ) - (size // 2)
    rows = torch.arange(h, device=x.device).view(1, h) - corner[:, 0:1]
    cols = torch.arange(w, device=x.device).view(1, w) - corner[:, 1:2]
    inside = ((rows >= 0) & (rows < size)).view(n, 1, h, 1) & ((cols >= 0) & (cols < size)).view(n, 1, 1, w)
    return x.masked_fill(inside, 0.0)


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """The recipe's augmentation (one of `AUGMENTATIONS`), applied on `x`'s device."""
    if kind == "none":
        return x
    if kind == "flip":
        return random_flip(x, generator)
    if kind == "crop_flip":
        return random_flip(random_crop(x, 4, generator), generator)
    if kind == "crop2_flip":
        return random_flip(random_crop(x, 2, generator), generator)
    if kind == "flip_cutout":
        return random_cutout(random_flip(x, generator), CUTOUT_SIZE, generator)
    raise ValueError(f"unknown augmentation {kind!r}; known: {AUGMENTATIONS}")


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up from ~0 to 1 over `warmup_steps`, then linear decay to 0 at `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def train_fast(
    model: nn.Module,
    data: ExampleSet,
    recipe: TrainingRecipe,
    *,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
    on_epoch: EpochCallback | None = None,
    stats: list[FastTrainStats] | None = None,
    force_compile: bool = False,
) -> nn.Module:
    """Train `model` in place for `recipe.epochs` epochs with the fast recipe; returns it in eval mode.

    `on_epoch` gets a `status` keyword ("train acc 91.2%"); `stats`, if given, receives a
    `FastTrainStats` record. The recipe's `compile` mode applies on CUDA only (like its precision: CPU
    verdicts stay those of the eager fp32 loop); `force_compile` applies it on any device (tests). A compiled
    run first checks one batch's gradients against eager (`training.compile_check`) and raises
    `CompiledGradientMismatch` rather than train through a graph whose gradients are wrong.
    """
    if recipe.loss != "cross_entropy":
        raise ValueError(f"unsupported loss {recipe.loss!r}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    numerics = LoopNumerics.of(recipe, device, force_compile=force_compile)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    numerics.prepare_model(model.to(device)).train()
    step_model = numerics.compiled(model)
    graph_trees = numerics.compile_mode == "reduce-overhead"  # Inductor's CUDA graphs: mark where a step begins
    x_all = data.inputs.to(device, non_blocking=True)
    y_all = data.labels.to(device, non_blocking=True)
    n = len(y_all)
    batch = recipe.batch_size
    steps_per_epoch = math.ceil(n / batch) if n else 0
    total_steps = steps_per_epoch * recipe.epochs
    warmup_steps = round(recipe.warmup_epochs * steps_per_epoch)
    optimizer = recipe.make_optimizer(model.parameters(), **numerics.optimizer_options())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup_steps))
    aug_gen = torch.Generator(device=device).manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    start = time.perf_counter()
    agreement = None
    if step_model is not model and n >= batch:  # compiles the graph, and refuses one whose gradients are wrong
        agreement = check_compiled_gradients(
            model,
            step_model,
            numerics.inputs(x_all[:batch]),
            y_all[:batch],
            numerics,
            loop="the fast trainer",
            loss_fn=lambda logits, y: F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing),
        )
    correct = seen = 0
    first_epoch = 0.0
    for epoch in range(recipe.epochs):
        order = torch.randperm(n, generator=generator).to(device)
        x_epoch = augment(x_all, recipe.augmentation, aug_gen)
        correct_t = torch.zeros((), device=device, dtype=torch.long)
        for s in range(0, n, batch):
            idx = order[s : s + batch]
            x = numerics.inputs(x_epoch[idx])
            y = y_all[idx]
            full = len(idx) == batch  # an epoch's last, smaller batch runs eagerly: no second compilation
            if graph_trees and full:
                torch.compiler.cudagraph_mark_step_begin()
            with numerics.autocast():
                logits = (step_model if full else model)(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            correct_t += (logits.detach().argmax(1) == y).sum()
        correct, seen = int(correct_t), n  # one device sync per epoch
        if epoch == 0:
            first_epoch = time.perf_counter() - start
        if on_epoch is not None:
            on_epoch(
                epoch + 1, recipe.epochs, time.perf_counter() - start, status=f"train acc {correct / max(seen, 1):.1%}"
            )
    if cuda:
        torch.cuda.synchronize(device)
    model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    if stats is not None:
        stats.append(
            FastTrainStats(
                epochs=recipe.epochs,
                steps=total_steps,
                seconds=time.perf_counter() - start,
                first_epoch_seconds=first_epoch,
                train_accuracy=correct / max(seen, 1),
                device=str(device),
                precision=numerics.precision,
                peak_memory_bytes=int(torch.cuda.max_memory_allocated(device)) if cuda else None,
                compile=numerics.compile_mode,
                compiled_gradient_excess=None if agreement is None else agreement.excess,
            )
        )
    return model.eval()


def describe(stats: FastTrainStats) -> dict[str, Any]:
    """JSON-able form of a run's stats."""
    from dataclasses import asdict

    return asdict(stats)
