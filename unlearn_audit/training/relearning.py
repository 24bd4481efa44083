"""The relearning attack of Siddiqui et al.: fine-tune an unlearned model on the retain set plus
a few forget examples, and watch whether the forgotten poison comes back.

The authors' attacker (shoaibahmed/vision_relearning) is strong: Adam at 0.1x the training learning
rate, cosine-decayed to a tenth of that, no weight decay, batch-norm in train mode, the training
augmentation, for 10 epochs of the training loader, and the reported figure is the mean of the last
evaluations of the curve rather than its final point. `RelearningAttack` carries those settings,
read from a recipe's `[checks.relearning_resistant]` options with these defaults, so that a profile
states where it must differ (e.g. fewer epochs on a CPU profile). A weak attacker makes the check
lenient: knowledge that only a long fine-tuning brings back is still in the model.

Method and retrain reference get the identical attack: the same relearning examples, the same
batch order and augmentation draws (one seed), the same number of steps.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.protocol import ExampleSet, TrainingRecipe
from unlearn_audit.training.compile_check import check_compiled_gradients
from unlearn_audit.training.fast import augment
from unlearn_audit.training.graphed_step import GraphedTrainingStep
from unlearn_audit.training.loops import resident_batches
from unlearn_audit.training.numerics import LoopNumerics

OPTIMIZERS = ("adam", "recipe")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class RelearningAttack:
    """How the attacker fine-tunes (one attack for every model it is applied to)."""

    optimizer: str  # "adam" (the authors'), or "recipe": the training recipe's own optimizer
    lr: float
    final_lr: float  # cosine decay ends here (the authors: a tenth of `lr`); == lr for a constant rate
    weight_decay: float
    batch_size: int
    steps: int
    augmentation: str  # "none", "flip", "crop_flip" (training/fast.py)
    eval_every: int
    window: int  # the verdict reads the mean of the last `window` evaluations of the curve

    def lr_at(self, step: int) -> float:
        """Cosine from `lr` at step 0 to `final_lr` at the last step (constant if they are equal)."""
        if self.steps <= 1 or self.final_lr == self.lr:
            return self.lr
        return self.final_lr + (self.lr - self.final_lr) * (1 + math.cos(math.pi * step / self.steps)) / 2

    def describe(self) -> str:
        schedule = f"cosine-decayed to {self.final_lr:g}" if self.final_lr != self.lr else "constant"
        opt = "Adam" if self.optimizer == "adam" else "the recipe's optimizer"
        aug = "" if self.augmentation == "none" else f", {self.augmentation.replace('_', '+')} augmentation"
        read = (
            "the final point"
            if self.window == 1
            else f"the mean of the last {self.window} evaluations (every {self.eval_every} steps)"
        )
        return (
            f"{self.steps} steps of {opt} at lr {self.lr:g} ({schedule}, weight decay {self.weight_decay:g}, "
            f"batch {self.batch_size}, batch-norm in train mode{aug}), read at {read}"
        )

    def key(self) -> str:
        """Names this attack in memo keys: every field that changes what is measured."""
        return (
            f"{self.optimizer}-lr{self.lr:g}-{self.final_lr:g}-wd{self.weight_decay:g}-b{self.batch_size}-s{self.steps}"
            f"-{self.augmentation}-e{self.eval_every}"
        )


def attack_from_options(options: Mapping[str, Any], recipe: TrainingRecipe, num_examples: int) -> RelearningAttack:
    """The attack a recipe's `[checks.relearning_resistant]` options describe, for `num_examples` attacker examples.

    Length: `steps` if given, else `epochs` (default 10, the authors') passes over the attacker's data.
    Rate: `lr` if given, else `lr_scale` (default 0.1, the authors') times the training recipe's lr.
    """
    optimizer = str(options.get("optimizer", "adam"))
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"relearning optimizer {optimizer!r}: expected one of {OPTIMIZERS}")
    schedule = str(options.get("schedule", "cosine"))
    if schedule not in SCHEDULES:
        raise ValueError(f"relearning schedule {schedule!r}: expected one of {SCHEDULES}")
    batch = int(options.get("batch_size", recipe.batch_size))
    if "steps" in options:
        steps = int(options["steps"])
    else:
        steps = max(1, math.ceil(float(options.get("epochs", 10)) * math.ceil(num_examples / batch)))
    lr = float(options["lr"]) if "lr" in options else float(options.get("lr_scale", 0.1)) * recipe.lr
    final_lr = lr * float(options.get("final_lr_fraction", 0.1)) if schedule == "cosine" else lr
    default_wd = 0.0 if optimizer == "adam" else recipe.weight_decay
    augmentation = str(options.get("augmentation", "recipe"))
    if augmentation == "recipe":
        augmentation = recipe.augmentation
    eval_every = max(1, int(options.get("eval_every", 20)))
    window = max(1, int(options.get("window", 1)))
    evaluations = math.ceil(steps / eval_every)
    if window > evaluations:
        raise ValueError(
            f"relearning window {window} is longer than the curve's {evaluations} evaluations "
            f"({steps} steps, one every {eval_every})"
        )
    return RelearningAttack(
        optimizer,
        lr,
        final_lr,
        float(options.get("weight_decay", default_wd)),
        batch,
        steps,
        augmentation,
        eval_every,
        window,
    )


def _optimizer(
    attack: RelearningAttack, recipe: TrainingRecipe, params: Any, numerics: LoopNumerics, graphed: bool
) -> tuple[torch.optim.Optimizer, torch.Tensor | None]:
    """The attacker's optimizer; for a graphed run, capturable with its lr in a device tensor (returned)."""
    if attack.optimizer == "adam":
        if graphed:
            lr = torch.tensor(attack.lr, device=numerics.device_type)
            return torch.optim.Adam(params, lr=lr, weight_decay=attack.weight_decay, fused=True, capturable=True), lr
        return torch.optim.Adam(
            params, lr=attack.lr, weight_decay=attack.weight_decay, **numerics.optimizer_options()
        ), None
    return recipe.make_optimizer(
        params, lr=attack.lr, weight_decay=attack.weight_decay, **numerics.optimizer_options()
    ), None


def cuda_graphs_enabled() -> bool:
    """CUDA graphs for the attack's steps, unless `UNLEARN_AUDIT_CUDA_GRAPHS=0` turns them off."""
    return os.environ.get("UNLEARN_AUDIT_CUDA_GRAPHS", "1") != "0"


class AttackRun:
    """One model under the attack: its own copy, optimizer, batch order and augmentation draws.

    On CUDA it issues its work on a stream of its own, so that the runs of several models (the
    attacker sizes k of one model) overlap on the GPU; full batches replay a captured CUDA graph
    (`training.graphed_step`) when the optimizer is Adam.
    """

    def __init__(
        self,
        model: nn.Module,
        data: tuple[torch.Tensor, torch.Tensor],
        recipe: TrainingRecipe,
        attack: RelearningAttack,
        seed: int,
        device: torch.device,
        numerics: LoopNumerics,
        graphs: bool,
    ) -> None:
        self.attack = attack
        self.numerics = numerics
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream(device))
        self.inputs, self.labels = data  # on the device, shared read-only with the other runs on the same data
        with self._on_stream():
            self.model = numerics.prepare_model(copy.deepcopy(model).to(device)).train()
        graphed = graphs and self.cuda and attack.optimizer == "adam"
        # Full batches through the model under torch.compile when the recipe asks for it (odd-sized ones eagerly).
        self.full_batch_model = numerics.compiled(self.model, own_cuda_graphs=not graphed)
        # A compiled model's gradients are checked against eager once, on the attacker's first full batch.
        self.compiled_gradient_excess: float | None = None
        if self.full_batch_model is not self.model and len(self.labels) >= attack.batch_size:
            with self._on_stream():
                self.compiled_gradient_excess = check_compiled_gradients(
                    self.model,
                    self.full_batch_model,
                    numerics.inputs(self.inputs[: attack.batch_size]),
                    self.labels[: attack.batch_size],
                    numerics,
                    loop="the relearning attack",
                ).excess
        # On CUDA the curve is measured on a copy taken at each evaluation point, while the next steps train.
        self.snapshot: nn.Module | None = copy.deepcopy(self.model).eval() if self.cuda else None
        self._snapshot_ready: torch.cuda.Event | None = None
        self.optimizer, lr_tensor = _optimizer(attack, recipe, self.model.parameters(), numerics, graphed)
        self.graphed: GraphedTrainingStep | None = None
        if graphed and self.stream is not None and lr_tensor is not None:
            self.graphed = GraphedTrainingStep(
                self.model,
                self.optimizer,
                lr_tensor,
                numerics,
                self.stream,
                batch_size=attack.batch_size,
                full_batch_model=self.full_batch_model,
            )
        self.generator = torch.Generator().manual_seed(seed)
        self.aug_generator = torch.Generator(device=device).manual_seed(seed + 1)
        self._batches: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(())

    def _on_stream(self) -> contextlib.AbstractContextManager[Any]:
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch of the current pass; a new pass (a new permutation) when one ends."""
        for _ in range(2):
            try:
                return next(self._batches)
            except StopIteration:
                self._batches = resident_batches(self.inputs, self.labels, self.attack.batch_size, self.generator)
        raise ValueError("the attacker's data is empty")

    def step(self, step: int) -> None:
        """Optimisation step number `step` (0-based), issued without waiting for the device."""
        with self._on_stream():
            x, y = self._next_batch()
            x = augment(x, self.attack.augmentation, self.aug_generator)
            lr = self.attack.lr_at(step)
            if self.graphed is not None:
                self.graphed.step(x, y, lr)
                return
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            full = len(y) == self.attack.batch_size
            if full and self.numerics.compile_mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()
            with self.numerics.autocast():
                logits = (self.full_batch_model if full else self.model)(self.numerics.inputs(x))
            F.cross_entropy(logits.float(), y).backward()
            self.optimizer.step()

    def measured(self, measure: Callable[[nn.Module], float]) -> float:
        """`measure(model)` once this run's queued steps are done; the model back in train mode after."""
        if self.stream is not None:
            torch.cuda.current_stream(self.stream.device).wait_stream(self.stream)
        value = measure(self.model)
        self.model.train()
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream(self.stream.device))
        return value

    def take_snapshot(self) -> None:
        """Queue a copy of the model's state (parameters and batch-norm statistics) after the steps queued so far."""
        assert self.stream is not None and self.snapshot is not None
        with self._on_stream(), torch.no_grad():
            # The previous snapshot's measurement (on the default stream) is done before it is overwritten.
            self.stream.wait_stream(torch.cuda.current_stream(self.stream.device))
            for mine, copy_ in zip(_state_tensors(self.model), _state_tensors(self.snapshot)):
                copy_.copy_(mine)
            self._snapshot_ready = torch.cuda.Event()
            self._snapshot_ready.record(self.stream)

    def measured_snapshot(self, measure: Callable[[nn.Module], float]) -> float:
        """`measure` of the last snapshot; the training steps queued after it go on meanwhile."""
        assert self.snapshot is not None and self._snapshot_ready is not None and self.stream is not None
        torch.cuda.current_stream(self.stream.device).wait_event(self._snapshot_ready)
        return measure(self.snapshot)

    def finish(self) -> nn.Module:
        if self.stream is not None:
            torch.cuda.current_stream(self.stream.device).wait_stream(self.stream)
        return self.model.eval()

    def describe(self) -> dict[str, Any]:
        """How the run computed (for benchmarks and reports)."""
        out: dict[str, Any] = {"numerics": self.numerics.describe(), "graphed": self.graphed is not None}
        if self.compiled_gradient_excess is not None:
            out["compiled_gradient_excess"] = self.compiled_gradient_excess
        if self.graphed is not None:
            out.update(
                replayed_steps=self.graphed.replayed,
                eager_steps=self.graphed.eager,
                fallback=self.graphed.fallback_reason,
            )
        return out


def relearn(
    model: nn.Module,
    data: ExampleSet,
    recipe: TrainingRecipe,
    attack: RelearningAttack,
    *,
    seed: int,
    measure: Callable[[nn.Module], float],
    device: torch.device | str = "cpu",
) -> list[tuple[int, float]]:
    """Fine-tune a copy of `model` on `data` with `attack`; return [(step, measure(model))] at step 0,
    every `eval_every` steps and at the last step."""
    return relearn_many([model], [data], recipe, attack, seeds=[seed], measures=[measure], device=device)[0]


def relearn_many(
    models: Sequence[nn.Module],
    datas: Sequence[ExampleSet],
    recipe: TrainingRecipe,
    attack: RelearningAttack,
    *,
    seeds: Sequence[int],
    measures: Sequence[Callable[[nn.Module], float]],
    device: torch.device | str = "cpu",
    graphs: bool | None = None,
    overlap_evaluation: bool = True,
    numerics: LoopNumerics | None = None,
    runs_out: list[AttackRun] | None = None,
) -> list[list[tuple[int, float]]]:
    """`relearn` for several (model, data, seed, measure) at once, in lockstep.

    Each run is exactly what `relearn` alone would do (its own copy, batch order and augmentation
    draws, the same measurements at the same steps). On CUDA the runs' steps are issued on separate
    streams, so that they overlap on the device, in the recipe's numerics (`training.numerics`), as CUDA
    graphs unless `graphs=False` or `UNLEARN_AUDIT_CUDA_GRAPHS=0`; each evaluation measures a copy of
    the model taken at its step while the next `eval_every` steps already train. Runs given the same
    `ExampleSet` object share one copy of it on the device. `overlap_evaluation=False` measures the
    models themselves between steps instead (benchmarks compare the two). `numerics` replaces the recipe's
    (`LoopNumerics.of(recipe, "cpu", force_precision=True)`: the bf16 path on a CPU, for tests). `runs_out`,
    if given, receives the runs.
    """
    if not (len(models) == len(datas) == len(seeds) == len(measures)):
        raise ValueError("relearn_many needs one data set, seed and measure per model")
    device = torch.device(device)
    numerics = numerics or LoopNumerics.of(recipe, device)
    use_graphs = cuda_graphs_enabled() if graphs is None else graphs
    on_device: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for data in datas:
        if id(data) not in on_device:
            on_device[id(data)] = (data.inputs.to(device), data.labels.to(device))
    runs = [
        AttackRun(m, on_device[id(d)], recipe, attack, s, device, numerics, use_graphs)
        for m, d, s in zip(models, datas, seeds)
    ]
    if runs_out is not None:
        runs_out.extend(runs)
    curves = [[(0, run.measured(measure))] for run, measure in zip(runs, measures)]
    boundaries = [b for b in range(attack.eval_every, attack.steps, attack.eval_every)] + [attack.steps]
    step = 0
    pending: int | None = None  # the evaluation point whose snapshots await their measurement
    for boundary in boundaries:
        while step < boundary:
            for run in runs:
                run.step(step)
            step += 1
        if device.type != "cuda" or not overlap_evaluation:
            for run, measure, curve in zip(runs, measures, curves):
                curve.append((boundary, run.measured(measure)))
            continue
        # CUDA: measure the previous point's snapshots while the steps just queued train, then snapshot this one.
        if pending is not None:
            for run, measure, curve in zip(runs, measures, curves):
                curve.append((pending, run.measured_snapshot(measure)))
        for run in runs:
            run.take_snapshot()
        pending = boundary
    if pending is not None:
        for run, measure, curve in zip(runs, measures, curves):
            curve.append((pending, run.measured_snapshot(measure)))
    for run in runs:
        run.finish()
    return curves


def _state_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Parameters and buffers, in a fixed order (two deep copies of one model list theirs alike)."""
    return [*model.parameters(), *model.buffers()]


def relearning_set(retain: ExampleSet, forget: ExampleSet, relearn_positions: torch.Tensor) -> ExampleSet:
    """The attacker's data: the whole retain set plus the chosen forget examples."""
    return ExampleSet(
        torch.cat([retain.inputs, forget.inputs[relearn_positions]]),
        torch.cat([retain.labels, forget.labels[relearn_positions]]),
    )
