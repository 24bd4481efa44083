"""The poison metric of each scenario, shared by the checks that re-measure the poison
(relearning, interpolation paths): attack success rate for a targeted poison, mean GUS for
Gaussian poisons, clean test error for an indiscriminate poison (Gradient Canceling). Larger
means more poison left in the model."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearn_audit.attacks import TRIGGER_ATTACKS
from unlearn_audit.metrics import correct, gaussian_unlearning_scores
from unlearn_audit.stats import Proportion, unit_normal_mean_test
from unlearn_audit.checks.base import CheckContext
from unlearn_audit.attacks.targets import target_margins
from unlearn_audit.checks.clean_label import validated
from unlearn_audit.checks.targeted_removed import triggered_hits


@dataclass(frozen=True)
class PoisonMeasurement:
    value: float
    stderr: float
    n: int
    hits: int | None = None  # for proportions (attack success)


def poison_name(ctx: CheckContext) -> str:
    return {"gaussian": "mean GUS", "backdoor": "attack success", "trigger_word": "attack success",
            "gradient_canceling": "clean test error", "witches_brew": "attack success on the validated targets"}[ctx.fixture.recipe.attack["kind"]]


def measure_poison(ctx: CheckContext, model: torch.nn.Module, forget_positions: torch.Tensor | None = None) -> PoisonMeasurement:
    """Poison left in `model`. For Gaussian poisons, only on `forget_positions` (indices into the forget set)."""
    kind = ctx.fixture.recipe.attack["kind"]
    t = ctx.fixture.tensors
    if kind in TRIGGER_ATTACKS:
        hits = triggered_hits(ctx.fixture, model)
        p = Proportion(int(hits.sum()), len(hits))
        return PoisonMeasurement(p.value, p.stderr, p.trials, p.successes)
    if kind == "gaussian":
        idx = ctx.fixture.forget_indices
        noise = t["secret.noise"]
        if forget_positions is not None:
            idx, noise = idx[forget_positions], noise[forget_positions]
        s = gaussian_unlearning_scores(model, t["clean_train_x"][idx], t["train_y"][idx], noise)
        test = unit_normal_mean_test(s[~s.isnan()].tolist(), alpha=0.01)
        return PoisonMeasurement(test.mean, test.stderr, test.n)
    if kind == "gradient_canceling":
        errors = ~correct(model, t["test_x"], t["test_y"])
        p = Proportion(int(errors.sum()), len(errors))
        return PoisonMeasurement(p.value, p.stderr, p.trials, p.successes)
    if kind == "witches_brew":
        hits = target_margins(model, t)[validated(ctx)] > 0
        p = Proportion(int(hits.sum()), len(hits))
        return PoisonMeasurement(p.value, p.stderr, p.trials, p.successes)
    raise ValueError(f"no poison metric for attack kind {kind!r}")
