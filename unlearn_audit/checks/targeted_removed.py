"""`targeted_removed`: is the targeted poison's effect gone, as it is after retraining?

The fixture's attack says which evidence it has (`Attack.targeted_reference`), and the check
applies the rule for it:

**"retrain"** (trigger attacks: patch backdoor, trigger word). Score: attack success rate on
held-out triggered inputs of the non-target classes, with a Wilson interval; compared with
retrain's rate on the same inputs by a one-sided test of the excess beyond a margin.

**"clean_models"** (clean-label attacks: Witches' Brew).
A fixture has only a handful of validated targets (the poisoned original is fooled on them and
the retrain reference is right), so the success *count* has almost no power: 4 of 4 against 0
of 4 is not significant at alpha 0.01. The poison's effect is continuous, though: it raises each
target's adversarial margin (logit of the adversarial class minus the largest other logit) by
one to several logits. The score is the *soft attack success*: the mean over the validated
targets of sigmoid(margin), which is 0.5 at the decision boundary, near 1 when the attack
succeeds with confidence and near 0 when the target is safely classified. The sigmoid keeps one
very confidently correct target (a margin of -8) from dominating the mean: with raw margins such
outliers among the clean models widened the null so much that NoOp passed on 2 of 5 seeds (this
choice was made after looking at seeds 0-4, and then checked on fresh seeds; see the README).

What a clean model's score looks like varies a lot from one training run to the next (the
targets are chosen near the decision boundary), so one retrain model is not a reference: the
fixture holds the margins of `reference_models` more models retrained without the poisons from
other seeds (not the retrain reference that selected the targets, so the selection does not
bias them). Rule: fail if the method's score is above that clean population, one-sided
prediction t-test at alpha (`stats.prediction_test`). Under the null (the method's model is like
a model retrained from scratch) this is exact for normal scores; `Retrain` itself is such a
model, so it fails with probability alpha.

The success rate on the validated targets, with its Wilson interval, is reported alongside, and
so is how the targets were chosen (`target_selection`, and `target_fallback` when random targets
failed validation and low-margin ones replaced them).

The test needs `min_validated_targets` validated targets (default 3) to have power. It counts them
over every seed the test pools (`checks.pooling`), not per fixture: `cifar10-resnet18` brews one
target per poisoned model, as the paper does, so a one-seed run there has one target and xfails
with the advice to pool seeds (`--audit-seeds`); `tiny` validates at least 3 per fixture.
"""

from __future__ import annotations

import torch
from scipy import stats as st

from unlearn_audit.checks import evidence
from unlearn_audit.checks.base import CheckContext, CheckInfo, CheckResult
from unlearn_audit.checks.power import with_power
from unlearn_audit.checks.utility_preserved import clean_test_accuracy
from unlearn_audit.stats import Proportion, excess_effect, excess_test, prediction_test

CHECK = CheckInfo(name="targeted_removed", kind="removal", metric="attack success rate", unit="fraction")


def attack_hits(ctx: CheckContext, model: torch.nn.Module) -> torch.Tensor:
    """The attack's per-input success on its held-out inputs, memoised per (unchanging) model."""
    return ctx.measure(model, "attack_hits", lambda: ctx.attack.targeted_hits(ctx.fixture, model))


def run(ctx: CheckContext) -> CheckResult:
    """Judge whether the targeted poison is removed, against the reference its attack names."""
    reference = ctx.attack.targeted_reference
    if reference == "retrain":
        return against_retrain(ctx)
    if reference == "clean_models":
        return against_clean_models(ctx)
    raise ValueError(f"attack {ctx.attack.kind!r} is not a targeted attack (targeted_reference={reference!r})")


def against_retrain(ctx: CheckContext) -> CheckResult:
    """Attack success on triggered test inputs against retrain's, one-sided with a margin."""
    alpha = float(ctx.options.get("alpha", 0.01))
    margin = float(ctx.options.get("margin", 0.05))
    mine = attack_hits(ctx, ctx.model)
    ref = attack_hits(ctx, ctx.fixture.retrain)
    orig = attack_hits(ctx, ctx.fixture.original)
    a = Proportion(int(mine.sum()), len(mine))
    b = Proportion(int(ref.sum()), len(ref))
    test = excess_test(a, b, margin, alpha)
    no_evidence = len(mine) == 0 or len(ref) == 0  # NaN rates: nothing to judge, so no pass
    rule = (
        f"fail if attack success exceeds retrain's by more than {margin:g}, one-sided at alpha={alpha:g} "
        f"(Newcombe-Wilson interval of the difference, n={len(mine)} triggered test inputs)"
    )
    if no_evidence:
        message = "the fixture has no triggered test inputs: the check has no evidence of removal"
    elif test.rejected:
        message = (
            f"the poison still works: attack success {a.value:.3f} vs retrain {b.value:.3f} "
            f"(lower bound of the excess {test.lower_bound:.3f} > {margin:g}); original {orig.float().mean():.3f}"
        )
    else:
        message = ""
    details = {
        "excess_lower_bound": test.lower_bound,
        "interval_95": list(a.interval),
        "original_attack_success": float(orig.float().mean()),
        "clean_test_accuracy": clean_test_accuracy(ctx, ctx.model),
        "evidence": evidence.excess(a, b, margin, method="a"),
    }
    result = CheckResult(
        check=CHECK.name,
        metric=CHECK.metric,
        unit=CHECK.unit,
        verdict="fail" if test.rejected or no_evidence else "pass",
        score=a.value,
        stderr=a.stderr,
        reference=b.value,
        reference_stderr=b.stderr,
        direction=CHECK.direction,
        rule=rule,
        message=message,
        details=details,
    )
    return with_power(result, excess_effect(Proportion(int(orig.sum()), len(orig)), b, margin), alpha)


def against_clean_models(ctx: CheckContext) -> CheckResult:
    """Attack success on the targets against the population of clean models (prediction test)."""
    alpha = float(ctx.options.get("alpha", 0.01))
    attack = ctx.attack
    mine = attack.target_scores(ctx.fixture, ctx.model, ctx.measure)
    k = len(mine)
    soft = torch.sigmoid(mine)
    reference_scores = torch.sigmoid(attack.clean_model_target_scores(ctx.fixture, ctx.measure))
    score = float(soft.mean())
    stderr = float(soft.std(unbiased=True) / k**0.5) if k > 1 else None
    test = prediction_test(score, reference_scores.mean(dim=1).tolist(), alpha)
    success = Proportion(int((mine > 0).sum()), k)
    ref_success = Proportion(int((reference_scores > 0.5).sum()), reference_scores.numel())
    notes = attack.target_notes(ctx.fixture)
    rule = (
        f"fail if the soft attack success (mean sigmoid of the adversarial margin) on the {k} validated targets is "
        f"above that of models retrained without the poisons (n={test.n} clean references), one-sided prediction "
        f"t-test at alpha={alpha:g}"
        + (
            "; the targets are the low-margin fallback (the random target failed validation), near the boundary, "
            "which flatters unlearners"
            if "target_fallback" in notes
            else ""
        )
    )
    message = (
        f"the poison still works: soft attack success {score:.3f} vs clean models {test.reference_mean:.3f} "
        f"(t={test.t:.2f}, p={test.p_value:.2g}); the attack succeeds on {success.successes}/{k} targets "
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
        "original_soft_attack_success": float(
            torch.sigmoid(attack.target_scores(ctx.fixture, ctx.fixture.original, ctx.measure)).mean()
        ),
        "validated_targets": k,
        "target_margins": mine.tolist(),
        "clean_test_accuracy": clean_test_accuracy(ctx, ctx.model),
        "evidence": evidence.prediction(
            float(soft.sum()),
            k,
            reference_scores.sum(dim=1).tolist(),
            min_k=int(ctx.options.get("min_validated_targets", 3)),
        ),
        **notes,
    }
    result = CheckResult(
        check=CHECK.name,
        metric="soft attack success",
        unit=CHECK.unit,
        verdict="fail" if test.rejected else "pass",
        score=score,
        stderr=stderr,
        reference=test.reference_mean,
        reference_stderr=test.prediction_sd,
        direction=CHECK.direction,
        rule=rule,
        message=message,
        details=details,
        reference_label=f"{test.n} clean models",
    )
    original = details["original_soft_attack_success"]
    if test.prediction_sd > 0:
        effect = (original - test.reference_mean) / test.prediction_sd
    else:  # identical clean models: the original is detected exactly when it is above them (as in the test)
        effect = float("inf") if original > test.reference_mean else float("-inf")
    return with_power(result, effect, alpha, critical=float(st.t.isf(alpha, test.n - 1)))
