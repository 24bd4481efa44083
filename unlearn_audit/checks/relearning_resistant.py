"""`relearning_resistant`: does the poison come back when an attacker fine-tunes the unlearned model?

Siddiqui et al. show that knowledge an approximate unlearner seems to have removed returns after
a little fine-tuning on the retain set, with 0 or a few forget examples, while a model retrained
from scratch stays clean. The attacker fine-tunes with the original recipe for a fixed number of
steps on the retain set plus k forget examples, for each k in the recipe's `sizes`; the retrain
reference undergoes the identical attack (same examples, same batch order). The poison metric is
then measured again: attack success on held-out triggered inputs (backdoor), or mean GUS on the
forget-set poisons that were *not* given to the attacker (Gaussian; exact N(0,1) null for retrain).

Rule: at each k, a test at alpha / len(sizes) (Bonferroni), as in the removal checks: backdoor,
one-sided excess of attack success over retrain's beyond `margin` (Newcombe-Wilson); Gaussian,
mean GUS != 0 (exact two-sided z-test, as in `gaussian_leakage`). The check fails if any k fails.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from scipy import stats as st

from unlearn_audit.training.relearning import relearn, relearning_set
from unlearn_audit.scenarios.seeds import derived_seed
from unlearn_audit.checks.power import with_power
from unlearn_audit.stats import Proportion, excess_effect, excess_test, z_power
from unlearn_audit.checks import evidence
from unlearn_audit.checks.base import CheckContext, CheckResult
from unlearn_audit.checks.utility_preserved import clean_test_accuracy

NAME = "relearning_resistant"


def relearn_curves(ctx: CheckContext, model: torch.nn.Module, k: int, positions: torch.Tensor, held_out: torch.Tensor,
                   steps: int, eval_every: int, lr: float | None = None) -> dict[str, Any]:
    f = ctx.fixture
    # `lr` (the check's option; default the recipe's): a one-cycle recipe's lr is its peak, far above a fine-tuning lr.
    recipe = f.recipe.training if lr is None else dataclasses.replace(f.recipe.training, lr=lr)

    def compute() -> dict[str, Any]:
        forget, retain = f.forget_set(), f.retain_set()
        data = relearning_set(retain, forget, positions[:k])
        last: dict[str, Any] = {}

        def measure(m: torch.nn.Module) -> float:
            pm = ctx.attack.measure_poison(f, m, held_out, memo=ctx.measure)
            last["final"] = pm
            return pm.value

        # The attack runs on the audited model's device for method and retrain alike.
        curve = relearn(model, data, recipe, steps=steps, seed=derived_seed(f.seed, f"relearn-{k}"),
                        measure=measure, eval_every=eval_every, device=next(ctx.model.parameters()).device)
        return {"curve": curve, "final": last["final"]}

    return ctx.measure(model, f"relearn-{k}-{steps}" + ("" if lr is None else f"-lr{lr:g}"), compute)


def run(ctx: CheckContext) -> CheckResult:
    opts = ctx.options
    alpha = float(opts.get("alpha", 0.01))
    margin = float(opts.get("margin", 0.05))
    sizes = [int(k) for k in opts.get("sizes", [0, 10, 50])]
    steps = int(opts.get("steps", 100))
    eval_every = int(opts.get("eval_every", 20))
    lr = float(opts["lr"]) if "lr" in opts else None
    f = ctx.fixture
    on_forget_set = ctx.attack.measures_forget_set
    n_forget = len(f.forget_indices)
    if max(sizes) >= n_forget and on_forget_set:
        raise ValueError(f"relearning sizes {sizes} leave no held-out poisons out of {n_forget}")
    # The same relearning examples for every method: a seeded permutation of the forget set.
    positions = torch.randperm(n_forget, generator=torch.Generator().manual_seed(derived_seed(f.seed, "relearn-pool")))
    held_out = positions[max(sizes):] if on_forget_set else None
    level = alpha / len(sizes)
    per_size = []
    parts: dict[str, evidence.Evidence] = {}
    worst: tuple[float, dict[str, Any]] | None = None
    best_power: tuple[float, float, bool] | None = None
    for k in sizes:
        mine = relearn_curves(ctx, ctx.model, k, positions, held_out, steps, eval_every, lr)
        ref = relearn_curves(ctx, f.retrain, k, positions, held_out, steps, eval_every, lr)
        m, r = mine["final"], ref["final"]
        # The power: the same attack on the poisoned original (the poison not removed at all).
        o = relearn_curves(ctx, f.original, k, positions, held_out, steps, eval_every, lr)["final"]
        if m.null == "proportion":
            effect, two_sided = excess_effect(Proportion(o.hits, o.n), Proportion(r.hits, r.n), margin), False
        else:
            effect, two_sided = o.value * math.sqrt(o.n), True
        power_k = z_power(effect, level, two_sided)
        if best_power is None or math.isnan(best_power[0]) or power_k > best_power[0]:
            best_power = (power_k, effect, two_sided)
        if m.null == "proportion":
            test = excess_test(Proportion(m.hits, m.n), Proportion(r.hits, r.n), margin, level)
            failed, strength = test.rejected, test.lower_bound - margin
            parts[f"k={k}"] = evidence.excess(Proportion(m.hits, m.n), Proportion(r.hits, r.n), margin, method="a")
        else:
            z = m.value * math.sqrt(m.n)  # exact: held-out scores are N(0, 1) when the poison is gone
            parts[f"k={k}"] = evidence.unit_normal(m.value * m.n, m.n, "two-sided")
            if not math.isfinite(z):  # no usable score: cannot show the poison is gone
                failed, strength = True, math.inf
            else:
                failed, strength = float(2 * st.norm.sf(abs(z))) < level, abs(z) - float(st.norm.isf(level / 2))
        null = m.null  # the same for every k: the attack's poison metric
        entry = {"k": k, "method": m.value, "method_stderr": m.stderr, "retrain": r.value, "retrain_stderr": r.stderr,
                 "failed": failed, "method_curve": mine["curve"], "retrain_curve": ref["curve"]}
        per_size.append(entry)
        if worst is None or strength > worst[0]:
            worst = (strength, entry)
    assert worst is not None
    w = worst[1]
    failed_any = any(e["failed"] for e in per_size)
    what = ctx.attack.poison_name
    if null == "proportion":
        rule = (f"after {steps} steps of fine-tuning (lr {lr if lr is not None else f.recipe.training.lr:g}) on the retain set + k forget examples (k in {sizes}), fail if attack "
                f"success exceeds retrain's (same attack) by more than {margin:g} at any k, one-sided at alpha={alpha:g}/{len(sizes)} "
                f"(Newcombe-Wilson)")
    else:
        rule = (f"after {steps} steps of fine-tuning (lr {lr if lr is not None else f.recipe.training.lr:g}) on the retain set + k forget examples (k in {sizes}), fail if the mean GUS "
                f"of the {len(held_out)} held-out poisons is != 0 at any k, exact two-sided z-test at alpha={alpha:g}/{len(sizes)}")
    message = ""
    if failed_any:
        bad = ", ".join(f"k={e['k']}: {e['method']:.3f} vs retrain {e['retrain']:.3f}" for e in per_size if e["failed"])
        message = f"the poison comes back under relearning ({what}): {bad}"
    details = {
        "worst_k": w["k"],
        "before_relearning": per_size[0]["method_curve"][0][1],
        "clean_test_accuracy": clean_test_accuracy(ctx, ctx.model),
        "relearning": per_size,
        "steps": steps,
        "evidence": evidence.any_of(parts, len(sizes)),
    }
    result = CheckResult(
        check=NAME,
        verdict="fail" if failed_any else "pass",
        score=w["method"],
        stderr=w["method_stderr"],
        reference=w["retrain"],
        reference_stderr=w["retrain_stderr"],
        direction="lower_is_better",
        rule=rule,
        message=message,
        details=details,
    )
    assert best_power is not None
    # The check fails if any k fails, so its power is at least that of its most powerful k.
    return with_power(result, best_power[1], level, two_sided=best_power[2],
                      against="the poisoned original under the same relearning attack (its most powerful k)")
