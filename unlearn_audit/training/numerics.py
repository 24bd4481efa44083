"""How a loop computes on its device: autocast precision, memory format, fused optimizers.

Every loop that trains or evaluates a fixture's models (the fast trainer, the relearning attack, the
reference unlearners' budgeted fine-tuning, the evaluations of the checks) asks `LoopNumerics.of`
for the recipe's numerics on its device, so that one rule decides them all:

- on CUDA, the recipe's `precision` ("bf16": bfloat16 autocast, losses and scores reduced in fp32)
  and `channels_last` memory format, and fused optimizer kernels (one launch per step instead of one
  per parameter tensor: a 128-image step of ResNet-18 is otherwise launch-bound);
- on the CPU, fp32 in the contiguous format, whatever the recipe says: bf16 autocast is slow on
  most CPUs, channels_last convolutions crashed the CPU build of torch 2.13 in our tests, and the
  CPU profiles' calibrated verdicts were measured in fp32. `force_precision` runs the bf16 path on
  a CPU anyway, `force_compile` the compiled one (tests and CPU rehearsals of the GPU path). A
  compiled graph on a CPU runs its convolutions channels_last whatever this says, and on an
  AVX2-only CPU torch 2.13's oneDNN got the weight gradient of a 1x1 stride-2 convolution with fewer
  than 8 input channels wrong (47x on a width-4 ResNet-18's first shortcut), or crashed or hung:
  there a compiled width-4 network is refused by the gradient check every compiled loop runs first
  (`training.compile_check`), when it does not hang.

A score measured under bf16 keeps its null distribution: GUS is N(0, 1) per poison for any gradient
that does not depend on the secret noise, however it was rounded; attack success and accuracy are
counts of argmaxes. What bf16 changes is the last bits of each value, which the measurement store
keys on (the device type is part of its key).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from unlearn_audit.protocol import COMPILE_MODES, PRECISIONS, TrainingRecipe


@dataclass(frozen=True)
class LoopNumerics:
    """The numerics of one loop on one device."""

    device_type: str
    autocast_dtype: torch.dtype | None  # None: plain fp32
    channels_last: bool
    fused_optimizer: bool
    compile_mode: str = "none"  # the torch.compile mode of training steps ("none": eager)

    @classmethod
    def of(
        cls,
        recipe: TrainingRecipe,
        device: torch.device | str,
        *,
        force_precision: bool = False,
        force_compile: bool = False,
    ) -> LoopNumerics:
        """The recipe's numerics on `device` (see the module docstring for the CPU rule)."""
        if recipe.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {recipe.precision!r} (expected one of {PRECISIONS})")
        if recipe.compile not in COMPILE_MODES:
            raise ValueError(f"unknown compile mode {recipe.compile!r} (expected one of {COMPILE_MODES})")
        device_type = torch.device(device).type
        cuda = device_type == "cuda"
        bf16 = recipe.precision == "bf16" and (cuda or force_precision)
        compile_mode = recipe.compile if (cuda or force_compile) else "none"
        return cls(device_type, torch.bfloat16 if bf16 else None, cuda and recipe.channels_last, cuda, compile_mode)

    @property
    def precision(self) -> str:
        return "bf16" if self.autocast_dtype is torch.bfloat16 else "fp32"

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self, *, cache_enabled: bool = True) -> contextlib.AbstractContextManager[Any]:
        """The loop's autocast region (a no-op in fp32). `cache_enabled=False` inside CUDA graph capture."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.autocast_dtype, cache_enabled=cache_enabled)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """`model` in the loop's memory format (in place; parameters keep their fp32 master copy)."""
        return model.to(memory_format=self.memory_format) if self.channels_last else model  # type: ignore[call-overload]

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the loop's memory format (image batches only; other shapes pass through)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def compiled(self, model: torch.nn.Module, *, own_cuda_graphs: bool = True) -> torch.nn.Module:
        """`model` under `torch.compile` in the loop's mode, with static shapes ("none": the model itself).

        Static shapes: another batch size compiles once more rather than turning every graph dynamic
        (callers keep odd-sized batches on the model itself). Inductor caches compiled kernels on disk
        (`TORCHINDUCTOR_CACHE_DIR`), so a later process on the same machine compiles much faster.
        `own_cuda_graphs=False` for a caller that captures the steps in CUDA graphs itself: "reduce-overhead"
        then compiles as "default" (Inductor's graphs cannot nest in the caller's capture)."""
        if self.compile_mode == "none":
            return model
        mode = None if self.compile_mode == "default" else self.compile_mode
        if mode == "reduce-overhead" and not own_cuda_graphs:
            mode = None
        return torch.compile(model, mode=mode, dynamic=False)  # type: ignore[return-value]

    def optimizer_options(self) -> dict[str, Any]:
        """Keyword arguments for torch.optim.SGD / Adam: fused kernels on CUDA, torch's default elsewhere."""
        return {"fused": True} if self.fused_optimizer else {}

    def describe(self) -> str:
        parts = [self.precision + (" autocast" if self.autocast_dtype is not None else "")]
        if self.channels_last:
            parts.append("channels_last")
        if self.fused_optimizer:
            parts.append("fused optimizer")
        if self.compile_mode != "none":
            parts.append(f"compiled ({self.compile_mode})")
        return ", ".join(parts)


def forward_logits(model: torch.nn.Module, x: torch.Tensor, numerics: LoopNumerics | None) -> torch.Tensor:
    """`model(x)` in `numerics` (None: exactly `model(x)`), logits in fp32: for loops that differentiate through
    the logits themselves (the attacks' double-backward steps), so that losses and gradients stay fp32."""
    if numerics is None:
        return model(x)
    with numerics.autocast():
        return model(numerics.inputs(x)).float()


_EVALUATED: contextvars.ContextVar[tuple[TrainingRecipe, bool] | None] = contextvars.ContextVar(
    "evaluated", default=None
)


@contextlib.contextmanager
def evaluating_fixture_of(recipe: TrainingRecipe, *, force_precision: bool = False) -> Iterator[None]:
    """Evaluations inside this block (accuracy, attack success, GUS, losses along a path) use the numerics of
    the fixture's training recipe: a check, or a build's validation, sets it once for all its measurements.
    `force_precision` as in `LoopNumerics.of` (the bf16 path on a CPU, for tests)."""
    token = _EVALUATED.set((recipe, force_precision))
    try:
        yield
    finally:
        _EVALUATED.reset(token)


def evaluation_numerics(device: torch.device | str) -> LoopNumerics:
    """The numerics of an evaluation on `device`: the evaluated fixture's recipe's, fp32 outside one."""
    recipe, force = _EVALUATED.get() or (TrainingRecipe(), False)
    return LoopNumerics.of(recipe, device, force_precision=force)
