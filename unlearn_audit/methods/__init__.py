"""Reference unlearners: the calibration anchors of the suite and the methods the papers evaluate.

`Retrain` must pass every check and `NoOp` must fail every removal check; `PartialRetrain` keeps a
known part of the poison (a partial-removal control). The others are the
approximate methods evaluated by Pawelczyk et al. (App. A.2) -- GD, NGD, GA, NegGrad+, EU-k, CF-k,
SCRUB -- plus SalUn and SSD, two popular methods of the same generation, and the tamper-resistant
methods of Siddiqui et al. 2025: `WeightDistortion`, and `WeightDistReg` and `CBFT` as published (on
top of their `AlternatingSCRUB` safeguard, with Adam), with `WeightDistRegSGD` / `CBFTSGD` as
single-phase ablations. Each is a dataclass whose defaults follow its paper where the paper says,
and whose docstring records what we chose where it does not.
Each spends at most `request.budget.example_gradients` as the harness counts them
(every example forwarded with autograd enabled; `Retrain`, the exempt gold standard, excepted),
draws randomness only from `request.generator`, works on `request.device`, leaves the request's
data untouched and returns a model of the same architecture.

Use them as `--unlearner unlearn_audit.methods:SCRUB`, or with other settings from your own module,
e.g. `NGD = lambda: NoisyGradientDescent(sigma=0.03)`.
"""

from __future__ import annotations

from unlearn_audit.methods.alternating_scrub import AlternatingSCRUB
from unlearn_audit.methods.basic import GradientAscent, GradientDescent, NoOp, Retrain
from unlearn_audit.methods.controls import FreshRandomModel, RandomRelabelDestructive
from unlearn_audit.methods.last_layers import CatastrophicForgettingK, ExactUnlearningK
from unlearn_audit.methods.neggrad import NegGradPlus
from unlearn_audit.methods.noisy import NoisyGradientDescent
from unlearn_audit.methods.partial import (
    PartialRetrain,
    PartialRetrain1,
    PartialRetrain3,
    PartialRetrain25,
    PartialRetrain50,
)
from unlearn_audit.methods.salun import SalUn
from unlearn_audit.methods.scrub import SCRUB
from unlearn_audit.methods.ssd import SSD
from unlearn_audit.methods.tamper_resistant import CBFT, CBFTSGD, WeightDistortion, WeightDistReg, WeightDistRegSGD

__all__ = [
    "AlternatingSCRUB",
    "CBFT",
    "CBFTSGD",
    "SCRUB",
    "SSD",
    "CatastrophicForgettingK",
    "ExactUnlearningK",
    "FreshRandomModel",
    "GradientAscent",
    "GradientDescent",
    "NegGradPlus",
    "NoOp",
    "NoisyGradientDescent",
    "PartialRetrain",
    "PartialRetrain1",
    "PartialRetrain3",
    "PartialRetrain25",
    "PartialRetrain50",
    "RandomRelabelDestructive",
    "Retrain",
    "SalUn",
    "WeightDistReg",
    "WeightDistRegSGD",
    "WeightDistortion",
]
