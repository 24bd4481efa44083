"""Partial-removal controls: methods that leave a known part of the poison in the model.

`NoOp` (nothing removed) and the destructive controls test that a check can fail at all; a check
that fails them may still pass a method that removed most, but not all, of a poison. These controls
retrain from scratch, as `Retrain` does, on the retain set plus a fraction `keep` of the forget set:
the kept poisons are learned as the original learned them, the others not at all. The residual is
known by construction where the poison metric is a mean over poisons (a Gaussian poison's mean GUS
is about `keep` x the original's) and measured where it is not (a backdoor's attack success grows
with the number of triggered examples non-linearly): `unlearn-audit calibrate` reports each
control's effect beside the check's minimal detectable effect, and the check must fail it where the
effect is well above that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from unlearn_audit.protocol import ExampleSet, UnlearningRequest
from unlearn_audit.training.loops import train


@dataclass
class PartialRetrain:
    """Retrains from a fresh initialisation on the retain set plus `keep` (a fraction) of the forget set.

    The kept examples are a random subset drawn from `request.generator`; `keep=0` is `Retrain`, `keep=1`
    an independently trained poisoned model. Like `Retrain` it spends a full training and is exempt from
    the budget check.
    """

    keep: float = 0.5
    exempt_from_budget = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.keep <= 1.0:
            raise ValueError(f"PartialRetrain(keep={self.keep!r}): keep is a fraction in [0, 1]")

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module:
        forget = request.forget
        count = math.ceil(self.keep * len(forget))
        kept = torch.randperm(len(forget), generator=request.generator)[:count].sort().values
        data = ExampleSet(
            torch.cat([request.retain.inputs, forget.inputs[kept]]),
            torch.cat([request.retain.labels, forget.labels[kept]]),
        )
        fresh = request.model_factory()
        return train(fresh, data, request.recipe, generator=request.generator, device=request.device)


@dataclass
class PartialRetrain50(PartialRetrain):
    """Half of the poisons kept: on a Gaussian poison about half the original's leak (0.45 of 0.77 mean GUS on
    `tiny` seed 0)."""

    keep: float = 0.5


@dataclass
class PartialRetrain25(PartialRetrain):
    """A quarter of the poisons kept (on `tiny`'s Gaussian poison 0.20 of the original's 0.77 mean GUS, seed 0)."""

    keep: float = 0.25


@dataclass
class PartialRetrain3(PartialRetrain):
    """3% of the poisons kept: on `tiny`'s backdoor 3 of 75, a dormant backdoor (seed 0: attack success 0.04
    against the original's 0.98, but 0.74 after relearning with k = 10, 0.21 above the clean models' 0.53)."""

    keep: float = 0.03


@dataclass
class PartialRetrain1(PartialRetrain):
    """1% of the poisons kept: on `tiny`'s backdoor one poison of 75, on its Gaussian poison 2 of 150."""

    keep: float = 0.01


__all__ = ["PartialRetrain", "PartialRetrain1", "PartialRetrain3", "PartialRetrain25", "PartialRetrain50"]
