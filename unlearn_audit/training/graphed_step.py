"""One training step captured as a CUDA graph, replayed for every full batch.

Why: the relearning attack fine-tunes ResNet-18 for thousands of 128-image steps. Such a step is a
few hundred small kernels; launched one by one from Python, the GPU waits on the CPU (measured on an
H200 in fp32: 11.7 ms a step, about 2% of the chip). A CUDA graph launches the whole step (forward,
loss, backward and the optimizer's fused update) at once, so that the GPU runs at its own speed, and
several graphs on several streams (one per attacker size) run side by side.

This follows PyTorch's documented whole-network capture (`torch.cuda.graph`): warm-up steps run
eagerly on a side stream before the capture, the optimizer is `capturable` with its learning rate in
a device tensor (updated with `fill_`, outside the graph), autocast's weight cache is off inside the
capture, and the batch is copied into static input tensors before each replay. The warm-up steps are
real steps of the run (the caller's first full batches), so a graphed run takes the same steps, on
the same batches, as an eager one; only the kernels' scheduling differs (and, as for any two GPU
runs, the last bits of non-deterministic reductions).

A batch of another shape (an epoch's last, partial batch) runs eagerly with the same optimizer. With
`full_batch_model` (the model under `torch.compile`, sharing its parameters) full batches run through
it: the warm-up steps compile it, before the capture, and the capture records its kernels.
Anything that fails during capture falls back to eager steps for the rest of the run, with the
reason kept in `GraphedTrainingStep.fallback_reason`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.training.numerics import LoopNumerics

WARMUP_STEPS = 3
"""Eager steps on the side stream before the capture (PyTorch's example uses 3)."""

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels)


class GraphedTrainingStep:
    """Forward, loss, backward and `optimizer.step()` of `model` on full batches of `batch_shape`.

    `optimizer` must hold its learning rate as a device tensor (`lr_tensor`) and be capturable;
    `step(x, y, lr)` runs one step, eagerly until `WARMUP_STEPS` full batches have been seen, then
    by replaying the captured graph. All work is issued on `stream`.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_tensor: torch.Tensor,
        numerics: LoopNumerics,
        stream: torch.cuda.Stream,
        *,
        batch_size: int,
        loss_fn: LossFn = cross_entropy,
        capture: bool = True,
        full_batch_model: nn.Module | None = None,
    ) -> None:
        self.model = model
        self.full_batch_model = full_batch_model or model
        self.optimizer = optimizer
        self.lr = lr_tensor
        self.numerics = numerics
        self.stream = stream
        self.batch_size = batch_size
        self.loss_fn = loss_fn
        self.capture_wanted = capture
        self.graph: torch.cuda.CUDAGraph | None = None
        self.fallback_reason: str | None = None if capture else "CUDA graphs turned off"
        self._full_batches_seen = 0
        self._static_x: torch.Tensor | None = None
        self._static_y: torch.Tensor | None = None
        self.replayed = 0
        self.eager = 0

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        """One optimisation step on (x, y) at learning rate `lr` (issued on the stream; no host sync)."""
        with torch.cuda.stream(self.stream):
            self.lr.fill_(lr)
            full = len(y) == self.batch_size
            if full and self.graph is not None:
                assert self._static_x is not None and self._static_y is not None
                self._static_x.copy_(x)
                self._static_y.copy_(y)
                self.graph.replay()
                self.replayed += 1
                return
            self._eager_step(x, y)
            if full:
                self._full_batches_seen += 1
                if self.capture_wanted and self.fallback_reason is None and self._full_batches_seen >= WARMUP_STEPS:
                    self._capture(x, y)

    def _forward_backward_update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        model = self.full_batch_model if len(y) == self.batch_size else self.model
        with self.numerics.autocast(cache_enabled=False):
            logits = model(self.numerics.inputs(x))
        self.loss_fn(logits, y).backward()
        self.optimizer.step()

    def _eager_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._forward_backward_update(x, y)
        self.eager += 1

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Record the step; nothing runs during capture, so the model is unchanged by it."""
        try:
            self._static_x = self.numerics.inputs(x.clone())
            self._static_y = y.clone()
            graph = torch.cuda.CUDAGraph()
            self.optimizer.zero_grad(set_to_none=True)
            self.stream.synchronize()
            with torch.cuda.graph(graph, stream=self.stream):
                self._forward_backward_update(self._static_x, self._static_y)
            self.graph = graph
        except Exception as exc:  # noqa: BLE001 - any capture failure: stay eager, say why
            self.graph = None
            self.fallback_reason = f"capture failed: {type(exc).__name__}: {exc}"
            self.optimizer.zero_grad(set_to_none=True)
