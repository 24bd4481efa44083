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

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.protocol import ExampleSet, TrainingRecipe

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
        schedule = (f"cosine-decayed to {self.final_lr:g}" if self.final_lr != self.lr else "constant")
        opt = "Adam" if self.optimizer == "adam" else "the recipe's optimizer"
        aug = "" if self.augmentation == "none" else f", {self.augmentation.replace('_', '+')} augmentation"
        read = "the final point" if self.window == 1 else f"the mean of the last {self.window} evaluations (every {self.eval_every} steps)"
        return (f"{self.steps} steps of {opt} at lr {self.lr:g} ({schedule}, weight decay {self.weight_decay:g}, "
                f"batch {self.batch_size}, batch-norm in train mode{aug}), read at {read}")

    def key(self) -> str:
        """Names this attack in memo keys: every field that changes what is measured."""
        return (f"{self.optimizer}-lr{self.lr:g}-{self.final_lr:g}-wd{self.weight_decay:g}-b{self.batch_size}-s{self.steps}"
                f"-{self.augmentation}-e{self.eval_every}")


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
        raise ValueError(f"relearning window {window} is longer than the curve's {evaluations} evaluations "
                         f"({steps} steps, one every {eval_every})")
    return RelearningAttack(optimizer, lr, final_lr, float(options.get("weight_decay", default_wd)), batch, steps,
                            augmentation, eval_every, window)


def _optimizer(attack: RelearningAttack, recipe: TrainingRecipe, params: Any) -> torch.optim.Optimizer:
    if attack.optimizer == "adam":
        return torch.optim.Adam(params, lr=attack.lr, weight_decay=attack.weight_decay)
    return recipe.make_optimizer(params, lr=attack.lr, weight_decay=attack.weight_decay)


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
    from unlearn_audit.training.fast import augment

    attacked = copy.deepcopy(model).to(device)
    optimizer = _optimizer(attack, recipe, attacked.parameters())
    generator = torch.Generator().manual_seed(seed)
    aug_generator = torch.Generator(device=torch.device(device)).manual_seed(seed + 1)
    curve = [(0, measure(attacked))]
    step = 0
    while step < attack.steps:
        attacked.train()
        for x, y in data.batches(attack.batch_size, generator=generator, device=device):
            for group in optimizer.param_groups:
                group["lr"] = attack.lr_at(step)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(attacked(augment(x, attack.augmentation, aug_generator)), y).backward()
            optimizer.step()
            step += 1
            if step % attack.eval_every == 0 or step == attack.steps:
                curve.append((step, measure(attacked)))
                attacked.train()
            if step >= attack.steps:
                break
    attacked.eval()
    return curve


def relearning_set(retain: ExampleSet, forget: ExampleSet, relearn_positions: torch.Tensor) -> ExampleSet:
    """The attacker's data: the whole retain set plus the chosen forget examples."""
    return ExampleSet(
        torch.cat([retain.inputs, forget.inputs[relearn_positions]]),
        torch.cat([retain.labels, forget.labels[relearn_positions]]),
    )
