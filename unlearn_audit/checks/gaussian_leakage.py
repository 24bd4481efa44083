"""`gaussian_leakage`: does the unlearned model still depend on the secret Gaussian noise?

Score: the mean Gaussian Unlearning Score over the forget-set poisons (Pawelczyk et al.).
Under "no leakage" every per-poison score is exactly N(0, 1), so the mean of k scores has
standard error 1/sqrt(k) and a z-test is exact. The test is two-sided: training on the poisons
makes the mean positive, but a method that over-corrects (e.g. pushes the model *against* the
noise) still depends on the secret noise, and a strongly negative mean is leakage too. Also reported: the membership
inference TPR at FPR 1% (threshold at the N(0, 1) quantile, which is exact under the null),
the original model's score (the test's power) and retrain's.
"""

from __future__ import annotations

import math

import torch
from scipy import stats as st

from unlearn_audit.checks import evidence
from unlearn_audit.checks.base import CheckContext, CheckInfo, CheckResult, Verdict
from unlearn_audit.checks.power import with_power
from unlearn_audit.checks.utility_preserved import clean_test_accuracy
from unlearn_audit.metrics import gaussian_unlearning_scores
from unlearn_audit.stats import Proportion, unit_normal_mean_test

CHECK = CheckInfo(name="gaussian_leakage", kind="removal", metric="mean GUS of the forget-set poisons", unit="z-score")


def gus_scores(ctx: CheckContext, model: torch.nn.Module) -> torch.Tensor:
    """Gaussian Unlearning Scores of the poison's secret noise on the forget examples, NaNs dropped (memoised)."""
    t = ctx.fixture.tensors
    idx = ctx.fixture.forget_indices

    def compute() -> torch.Tensor:
        s = gaussian_unlearning_scores(model, t["clean_train_x"][idx], t["train_y"][idx], t["secret.noise"])
        return s[~s.isnan()]

    return ctx.measure(model, "gus", compute)


def run(ctx: CheckContext) -> CheckResult:
    """Judge whether the Gaussian poison still leaks: the mean GUS against its N(0, 1) null, two-sided."""
    alpha = float(ctx.options.get("alpha", 0.01))
    fpr = float(ctx.options.get("tpr_at_fpr", 0.01))
    threshold = float(st.norm.isf(fpr))
    scores = gus_scores(ctx, ctx.model)
    test = unit_normal_mean_test(scores.tolist(), alpha, alternative="two-sided")
    ref = unit_normal_mean_test(gus_scores(ctx, ctx.fixture.retrain).tolist(), alpha, alternative="two-sided")
    orig = unit_normal_mean_test(gus_scores(ctx, ctx.fixture.original).tolist(), alpha)
    tpr = Proportion(int((scores > threshold).sum()), len(scores))
    details = {
        "z": test.z,
        "p_value": test.p_value,
        "num_poisons": test.n,
        f"tpr_at_fpr_{fpr:g}": tpr.value,
        "tpr_interval_95": list(tpr.interval),
        "original_gus": orig.mean,
        "original_z": orig.z,
        "retrain_gus": ref.mean,
        "clean_test_accuracy": clean_test_accuracy(ctx, ctx.model),
        "scores": [round(v, 4) for v in scores.tolist()],  # per-poison GUS, for plots (N(0,1) under the null)
        "evidence": evidence.unit_normal(float(scores.sum()) if test.n else 0.0, test.n, "two-sided"),
    }
    rule = (
        f"fail if mean GUS != 0 by a two-sided z-test at alpha={alpha:g} "
        f"(per-poison scores are exactly N(0,1) when the model does not depend on the noise; se = 1/sqrt({test.n}))"
    )
    verdict: Verdict = "fail" if test.rejected else "pass"
    message = (
        f"the model still depends on the forget-set noise: mean GUS {test.mean:.3f} (z = {test.z:.2f}, "
        f"p = {test.p_value:.2g}); retrain {ref.mean:.3f}, original {orig.mean:.3f}"
        if test.rejected
        else ""
    )
    if not math.isfinite(test.mean):
        verdict, message = "fail", "no usable GUS values (every input gradient was zero)"
    result = CheckResult(
        check=CHECK.name,
        metric=CHECK.metric,
        unit=CHECK.unit,
        verdict=verdict,
        score=test.mean,
        stderr=test.stderr,
        reference=ref.mean,
        reference_stderr=ref.stderr,
        direction=CHECK.direction,
        rule=rule,
        message=message,
        details=details,
    )
    return with_power(result, orig.z, alpha, two_sided=True)
