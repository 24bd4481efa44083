"""The `Unlearner` protocol (v1) and the request the harness hands to it.

Everything a method may use to unlearn is in `UnlearningRequest`; everything else (the
poison's secret material, the held-out evaluation sets, the retrain reference) stays with
the harness so that a method cannot, even by accident, optimise against the audit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # torch is imported lazily so that the pytest plugin stays light.
    import torch
    from torch import nn

DEFAULT_BUDGET_FRACTION = 0.1
"""The compute an unlearner gets unless told otherwise: 10% of the original training, as in Pawelczyk et al."""

AUGMENTATIONS = ("none", "flip", "crop_flip", "crop2_flip", "flip_cutout")
"""`TrainingRecipe.augmentation` values (applied by `training.fast.augment`): "crop_flip" is the usual CIFAR
one (4-pixel zero padding, random crop, horizontal flip); "crop2_flip" pads 2 pixels; "flip_cutout" flips and
zeroes one random 8x8 square per image (DeVries and Taylor, 2017)."""
PRECISIONS = ("fp32", "bf16")
"""`TrainingRecipe.precision` values (`training.numerics`)."""
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune-no-cudagraphs")
"""`TrainingRecipe.compile` values: "none", or the `torch.compile` mode of the model in the fast trainer's and the
relearning attack's full-batch steps on CUDA (`training.numerics`)."""

_EXTENDED_FIELDS = (
    "trainer",
    "nesterov",
    "label_smoothing",
    "warmup_epochs",
    "precision",
    "channels_last",
    "compile",
)


@dataclass(frozen=True)
class TrainingRecipe:
    """How the original model was trained, so that a method can reuse it."""

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    epochs: int = 30
    loss: str = "cross_entropy"
    augmentation: str = "none"  # one of AUGMENTATIONS (fast trainer and relearning attack; the plain loop: none)
    # Added for the GPU profile (`cifar10-resnet18`); the defaults reproduce the plain loop above, and
    # fields at their defaults stay out of fixture cache keys (`cache_spec`), so older keys hold.
    trainer: str = "plain"  # "plain": `training.train`'s loop; "fast": `fast_training.train_fast` for full runs
    nesterov: bool = False
    label_smoothing: float = 0.0  # used by the fast trainer only
    warmup_epochs: float = 0.0  # fast trainer: linear warm-up to `lr`, then linear decay to 0
    precision: str = (
        "fp32"  # "bf16" = bfloat16 autocast on CUDA for every loop (always fp32 on CPU): `training.numerics`
    )
    channels_last: bool = False  # channels_last memory format on CUDA, likewise
    compile: str = "none"  # on CUDA, torch.compile mode of the fast trainer's and relearning attack's steps

    def check_values(self, source: str = "<recipe>") -> None:
        """Raise ValueError naming `source` when augmentation, precision or compile is not a known value."""
        for name, known in (("augmentation", AUGMENTATIONS), ("precision", PRECISIONS), ("compile", COMPILE_MODES)):
            value = getattr(self, name)
            if value not in known:
                raise ValueError(f"invalid recipe {source}: [training] {name} = {value!r}; known: {known}")

    def cache_spec(self) -> dict[str, Any]:
        """The fields that identify a training run: all v1 fields, and later fields unless at their default."""
        extended = {f.name: f.default for f in fields(self) if f.name in _EXTENDED_FIELDS}
        return {k: v for k, v in self.__dict__.items() if k not in extended or v != extended[k]}

    def example_gradients(self, num_train: int) -> int:
        """Example-gradients the original training spent: one per example per epoch."""
        return self.epochs * num_train

    def make_optimizer(self, params: Any, *, fused: bool | None = None, **overrides: Any) -> torch.optim.Optimizer:
        """Build this recipe's optimizer; `overrides` replace recipe fields (lr, momentum, weight_decay).

        `fused=True` asks torch for its fused kernels (CUDA parameters only: one launch per step rather
        than one per tensor); None leaves torch's default."""
        import torch

        opts = {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay, **overrides}
        kernels: dict[str, Any] = {} if fused is None else {"fused": fused}
        if self.optimizer == "sgd":
            return torch.optim.SGD(
                params,
                lr=opts["lr"],
                momentum=opts["momentum"],
                weight_decay=opts["weight_decay"],
                nesterov=bool(opts.get("nesterov", self.nesterov)),
                **kernels,
            )
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=opts["lr"], weight_decay=opts["weight_decay"], **kernels)
        raise ValueError(f"unknown optimizer {self.optimizer!r} (expected 'sgd' or 'adam')")


@dataclass(frozen=True)
class Budget:
    """Compute an unlearner may spend.

    `fraction` is relative to the original training's compute (Pawelczyk et al. allow 10%);
    `example_gradients` is the same budget as a count of per-example forward+backward passes,
    which is what the harness counts while the method runs.
    """

    fraction: float
    example_gradients: int


@dataclass(frozen=True)
class ExampleSet:
    """Inputs and labels, exactly as the model was trained on them.

    Behaves like a map-style dataset (`len`, indexing), so `torch.utils.data.DataLoader(request.retain,
    batch_size=..., shuffle=True, generator=request.generator)` works as usual (it yields CPU
    tensors: move each batch to `request.device`), and offers `batches()` for a quick training
    loop that keeps to a budget. The tensors are the harness's copies: modifying them in place is detected
    and fails the audit.
    """

    inputs: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[index], self.labels[index]

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        epochs: int | None = 1,
        max_examples: int | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (inputs, labels) mini-batches for `epochs` passes, reshuffled each pass.

        With `max_examples` (e.g. `request.budget.example_gradients`), stop once that many
        examples were yielded, cutting the last batch short; `epochs=None` then means "as many
        passes as the limit allows". This is the budget-keeping loop most methods need.
        """
        import torch

        n = len(self)
        if n == 0 or (epochs is None and max_examples is None):
            return
        yielded = 0
        epoch = 0
        while epochs is None or epoch < epochs:
            order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                if max_examples is not None:
                    if yielded >= max_examples:
                        return
                    idx = idx[: max_examples - yielded]
                x, y = self.inputs[idx], self.labels[idx]
                if device is not None:
                    x, y = x.to(device), y.to(device)
                yielded += len(idx)
                yield x, y
            epoch += 1


@dataclass(frozen=True)
class UnlearningRequest:
    """What the papers give an unlearner: the poisons to forget, the rest, and a budget."""

    forget: ExampleSet
    retain: ExampleSet
    budget: Budget
    recipe: TrainingRecipe
    model_factory: Callable[[], nn.Module]
    num_classes: int
    device: torch.device
    seed: int
    generator: torch.Generator = field(repr=False, compare=False)
    profile: str = "tiny"
    validation: ExampleSet | None = None
    """Held-out clean data, disjoint from everything the checks evaluate on, e.g. for choosing a
    checkpoint (as the NeurIPS 2023 unlearning challenge gives `unlearning(net, retain, forget,
    validation)`). The harness always passes an ExampleSet; it is empty on profiles whose recipes
    hold out none (`[data] validation_fraction`)."""


@runtime_checkable
class Unlearner(Protocol):
    """A method under audit.

    The harness calls `unlearn` with a private deep copy of the poisoned model, already on
    `request.device`. Return a model of the same architecture; returning the same object
    (modified in place) is fine.
    """

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module: ...
