"""`targeted_removed` on a clean-label targeted poison (Witches' Brew).

A fixture has only a handful of validated targets (the poisoned original is fooled on them and
the retrain reference is right), so the success *count* has almost no power: 4 of 4 against 0
of 4 is not significant at alpha 0.01. The poison's effect is continuous, though: it raises each
target's adversarial margin (logit of the adversarial class minus the largest other logit) by
several logits. The score is the mean adversarial margin over the validated targets.

What a clean model's score looks like varies a lot from one training run to the next (the
targets are chosen near the decision boundary), so one retrain model is not a reference: the
fixture holds the margins of `reference_models` more models retrained without the poisons from
other seeds (not the retrain reference that selected the targets, so the selection does not
bias them). Rule: fail if the method's mean margin is above that clean population, one-sided
prediction t-test at alpha (`stats.prediction_test`). Under the null (the method's model is like
a model retrained from scratch) this is exact for normal scores; `Retrain` itself is such a
model, so it fails with probability alpha.

The success rate on the validated targets, with its Wilson interval, is reported alongside.
"""

from __future__ import annotations

import torch

from ..stats import Proportion, prediction_test
from ..targets import target_margins, validated_targets
from .base import CheckContext, CheckResult
from .utility import clean_test_accuracy

NAME = "targeted_removed"


def validated(ctx: CheckContext) -> torch.Tensor:
    f = ctx.fixture
    return ctx.measure(f.original, "validated-targets", lambda: validated_targets(f.original, f.retrain, f.tensors))


def margins(ctx: CheckContext, model: torch.nn.Module) -> torch.Tensor:
    return ctx.measure(model, "target-margins", lambda: target_margins(model, ctx.fixture.tensors))


def run(ctx: CheckContext) -> CheckResult:
    alpha = float(ctx.options.get("alpha", 0.01))
    mask = validated(ctx)
    k = int(mask.sum())
    mine = margins(ctx, ctx.model)[mask]
    refs = ctx.fixture.tensors["secret.reference_margins"][:, mask]
    reference_scores = refs.mean(dim=1).tolist()
    score = float(mine.mean())
    stderr = float(mine.std(unbiased=True) / k**0.5) if k > 1 else None
    test = prediction_test(score, reference_scores, alpha)
    success = Proportion(int((mine > 0).sum()), k)
    ref_success = Proportion(int((refs > 0).sum()), refs.numel())
    rule = (
        f"fail if the mean adversarial margin on the {k} validated targets is above that of models retrained "
        f"without the poisons (n={test.n} clean references), one-sided prediction t-test at alpha={alpha:g}"
    )
    message = (
        f"the poison still works: mean adversarial margin {score:.3f} vs clean models {test.reference_mean:.3f} "
        f"(t={test.t:.2f}, p={test.p_value:.2g}); attack succeeds on {success.successes}/{k} targets "
        f"(clean models {ref_success.value:.0%}, original {k}/{k})"
        if test.rejected
        else ""
    )
    details = {
        "t": test.t,
        "p_value": test.p_value,
        "attack_success": success.value,
        "attack_success_interval_95": list(success.interval),
        "clean_reference_attack_success": ref_success.value,
        "original_mean_margin": float(margins(ctx, ctx.fixture.original)[mask].mean()),
        "validated_targets": k,
        "target_margins": mine.tolist(),
        "clean_test_accuracy": clean_test_accuracy(ctx, ctx.model),
    }
    return CheckResult(
        NAME, "fail" if test.rejected else "pass", score, stderr, test.reference_mean, test.prediction_sd,
        "lower_is_better", rule, message, details,
    )
