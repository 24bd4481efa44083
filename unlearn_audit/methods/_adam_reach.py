"""Scale the Adam learning rate of Siddiqui et al.'s unlearning phases to the budget a request allows.

Why a rule and not the authors' number: their scripts give every unlearning phase 100 epochs of
the training loader (CIFAR-10, batch 128: 391 x 100 = 39,100 Adam steps) at lr 1e-5, a third of
their 300-epoch training; a 10% budget on `tiny` allows about 34 steps per phase, for which 1e-5
does nothing measurable. Adam moves every parameter by about `lr` per step whatever the gradient's
scale, so `lr x steps` is how far a phase can carry each weight; we keep that reach -- the
authors' 1e-5 x 39,100 = 0.391 -- and divide it by the steps the phase's budget pays for. (The
`tiny` MLP's first-layer weights have an RMS of about 0.02, as ResNet-18's do, so one reach in
absolute units means about the same for both networks.)
"""

from __future__ import annotations

AUTHORS_LR = 1e-5
"""The authors' unlearning learning rate (Adam, no weight decay) for every phase and method."""

AUTHORS_STEPS = 100 * 391
"""Steps of one unlearning phase in the authors' scripts: 100 epochs of CIFAR-10's training loader at batch 128."""

AUTHORS_REACH = AUTHORS_LR * AUTHORS_STEPS
"""lr x steps of one authors' phase (0.391): the most Adam can move one parameter in that phase."""


def reach_scaled_lr(example_gradients: int, cost_per_step: int, reach: float = AUTHORS_REACH) -> float:
    """Adam learning rate that spreads `reach` over the steps `example_gradients` pays for at
    `cost_per_step` example-gradients a step (at least one step, so a tiny budget is not divided by 0)."""
    steps = max(1.0, example_gradients / max(1, cost_per_step))
    return reach / steps
