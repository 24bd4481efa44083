"""An example unlearning method, written against the unlearn-audit `Unlearner` protocol (v1).

The protocol in one paragraph
-----------------------------
An unlearner is anything with a method

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module

(or a plain function `(model, request) -> model`). The harness calls it once per
(scenario, seed) with a *private deep copy* of a poisoned model, already on `request.device`,
and audits whatever model you return: it must have the same architecture as the one you got.
Modifying `model` in place and returning it is fine; so is returning a new model built with
`request.model_factory()`.

What the request gives you (see `unlearn_audit.protocol`)
---------------------------------------------------------
- `request.forget`: the samples to remove, exactly as they were trained on (for a poisoning
  audit: the poisoned inputs with their, possibly wrong, labels).
- `request.retain`: the rest of the training set.
  Both are `ExampleSet`s: `len(s)`, `s[i]`, `s.inputs` / `s.labels` tensors, and
  `s.batches(batch_size, generator=..., device=...)`, which yields one shuffled epoch.
- `request.budget`: `fraction` of the original training's compute (0.1 by default) and the
  same budget as `example_gradients`, a count of per-example forward+backward passes.
- `request.recipe`: how the original model was trained (optimizer, lr, momentum,
  weight_decay, batch_size, epochs, loss); `recipe.make_optimizer(params, lr=...)` builds
  that optimizer, optionally with another learning rate.
- `request.model_factory()`: a freshly initialised model of the same architecture.
- `request.num_classes`, `request.device`, `request.seed`, `request.generator`, `request.profile`.

The rules the audit enforces
----------------------------
1. Budget. While `unlearn` runs, the harness counts every example that goes through the
   model's parameterised layers *with autograd enabled* (its own count, not yours). Spending
   more than `request.budget.example_gradients` fails the `budget_respected` check. Forward
   passes under `torch.no_grad()` (evaluation, a frozen teacher) are free. Count what you
   spend and cut the last batch short rather than overshoot, as below.
2. Randomness. Draw all randomness from `request.generator` (pass it to `batches()`,
   `torch.randperm(..., generator=...)`, ...). Do not reseed the global RNG: the audit
   repeats each scenario over seeds and relies on runs being independent and reproducible.
3. Data is read-only. The request's tensors are the harness's copies; changing them in place
   is detected and fails the audit. Copy (`x.clone()`) before augmenting.
4. Time. A run has a time limit (`--audit-timeout`, default 10x the fixture's original
   training time, at least 60 s); past it, the method's next forward pass raises and its
   tests fail.
5. Only the request. The poison's secret material, the evaluation sets and the
   retrain-from-scratch reference stay with the harness; a method gets no peek at the audit.
6. Device. Move batches to `request.device` (`batches(..., device=request.device)` does it).

The method below
----------------
`FinetuneThenDampen` is deliberately simple: fine-tune on the retain set with the original
recipe for part of the budget, then take a few small gradient-*ascent* steps on the forget set
to dampen what the model still remembers of it. The audit is expected to show that this does
not remove the poisons the way retraining does (that is what Pawelczyk et al. report for
methods of this kind) -- which is precisely what the audit is for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # only for annotations; `unlearn_audit` itself is cheap to import anyway
    from unlearn_audit import ExampleSet, UnlearningRequest

__all__ = ["FinetuneThenDampen", "finetune"]


def _run_steps(
    model: nn.Module,
    data: ExampleSet,
    optimizer: torch.optim.Optimizer,
    request: UnlearningRequest,
    *,
    max_examples: int,
    max_steps: int | None = None,
    ascent: bool = False,
) -> int:
    """Train `model` on `data` (descent, or ascent on the loss) for at most `max_examples`
    example-gradients and at most `max_steps` optimizer steps; returns the examples spent.

    Loops over as many epochs of `data.batches(...)` as needed, shuffled with
    `request.generator`, and truncates the last batch so that the spend never exceeds
    `max_examples` -- the harness counts every example forwarded with autograd enabled.
    """
    if max_examples <= 0 or len(data) == 0:
        return 0
    model.train()
    spent, steps = 0, 0
    while True:
        for x, y in data.batches(request.recipe.batch_size, generator=request.generator, device=request.device):
            remaining = max_examples - spent
            if remaining <= 0 or (max_steps is not None and steps >= max_steps):
                return spent
            x, y = x[:remaining], y[:remaining]  # cut the last batch to fit the budget
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            (-loss if ascent else loss).backward()
            optimizer.step()
            spent += len(y)
            steps += 1


@dataclass
class FinetuneThenDampen:
    """Fine-tune on the retain set, then a few small gradient-ascent steps on the forget set.

    Phase 1 spends `finetune_share` of the budget on the recipe's optimizer at the recipe's
    learning rate over `request.retain` (repairing utility and overwriting the poison by
    catastrophic forgetting). Phase 2 takes at most `ascent_steps` mini-batch steps of gradient
    ascent on `request.forget` at `ascent_lr_scale` times the recipe's rate, within what is left
    of the budget. The rest of the budget is deliberately left unspent.

    The harness instantiates the class without arguments (`--unlearner
    my_unlearner.method:FinetuneThenDampen`), so every hyperparameter has a default. To audit
    another setting, expose an instance, e.g. `aggressive = FinetuneThenDampen(ascent_steps=20)`
    in this module, and pass `--unlearner my_unlearner.method:aggressive`.
    """

    finetune_share: float = 0.5
    ascent_steps: int = 5
    ascent_lr_scale: float = 0.1

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module:
        budget = request.budget.example_gradients
        recipe = request.recipe

        # Phase 1: fine-tune on the retain set with the original recipe.
        finetune_opt = recipe.make_optimizer(model.parameters())
        spent = _run_steps(model, request.retain, finetune_opt, request, max_examples=int(self.finetune_share * budget))

        # Phase 2: dampen the forget set with a few small gradient-ascent steps.
        ascent_opt = recipe.make_optimizer(model.parameters(), lr=recipe.lr * self.ascent_lr_scale)
        spent += _run_steps(
            model,
            request.forget,
            ascent_opt,
            request,
            max_examples=budget - spent,
            max_steps=self.ascent_steps,
            ascent=True,
        )

        assert spent <= budget, (spent, budget)  # our own bookkeeping; the harness counts too
        return model.eval()


def finetune(model: nn.Module, request: UnlearningRequest) -> nn.Module:
    """The function form of the protocol: `(model, request) -> model`.

    Plain fine-tuning on the retain set with the original recipe for the whole budget -- the
    "GD" baseline of Pawelczyk et al. Use a function when the method has no settings; the
    harness wraps it (`--unlearner my_unlearner.method:finetune`).
    """
    optimizer = request.recipe.make_optimizer(model.parameters())
    _run_steps(model, request.retain, optimizer, request, max_examples=request.budget.example_gradients)
    return model.eval()
