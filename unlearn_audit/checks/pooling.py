"""One verdict from the evidence of several seeds.

With `--audit-seeds N` each (unlearner, check, scenario, budget) is one test: its seeds' evidence
(`checks.evidence`) is pooled and judged by the check's own test at the check's alpha, so more
seeds add power instead of multiplying false alarms (N tests at alpha each fail a perfect method
with probability about N x alpha). Every seed's own result stays in the details (`per_seed`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from unlearn_audit.checks import REMOVAL_CHECKS
from unlearn_audit.checks.base import CheckResult
from unlearn_audit.checks.conditioning import conditioned_on_utility
from unlearn_audit.checks.evidence import decide
from unlearn_audit.checks.mde import with_mde
from unlearn_audit.checks.power import pooled_power

HOW = {
    "unit_normal": "Stouffer's z: the scores of every seed in one exact z-test",
    "excess": "the counts of every seed added up",
    "prediction": "every validated target of every seed; pooled clean model j = the j-th clean model of each seed",
    "population": "each seed's proportion averaged; pooled clean model j = the j-th clean model of each seed",
    "shortfall": "the seeds' differences and variances added up",
    "any": "each part pooled over the seeds, Bonferroni over the parts",
    "exact": "fails if any seed fails",
}


def seed_summary(seed: int, result: CheckResult) -> dict[str, Any]:
    """One seed's result as the pooled result's details list it."""
    return {
        "seed": seed,
        "verdict": result.verdict,
        "score": result.score,
        "stderr": result.stderr,
        "reference": result.reference,
        "reference_stderr": result.reference_stderr,
        "message": result.message,
        "details": result.details,
    }


def pool(seeds: list[int], results: list[CheckResult], alpha: float) -> CheckResult:
    """The pooled result of one check over `seeds` (each seed's result in `results`, in order).

    One seed: its result, unchanged. Seeds whose fixture could not judge removal (xfail) are left
    out and named; if none is left, the first such result stands. A check without evidence (it
    did not get to measure, e.g. unlearn() failed) decides the pool: its result, with its seed named.
    Evidence that needs more units than the judged seeds have in all is not judged, with one seed
    as with several (`short_of_evidence`).
    """
    if len(results) == 1:
        one = results[0]
        short = short_of_evidence(seeds, results, [])
        if short is not None:
            return short
        judged_alone = one.verdict in ("pass", "fail") and isinstance(one.details.get("evidence"), dict)
        return with_mde(one, [one.details["evidence"]], alpha) if judged_alone else one
    judged = [(s, r) for s, r in zip(seeds, results) if r.verdict not in ("xfail", "skip")]
    left_out = [s for s, r in zip(seeds, results) if r.verdict in ("xfail", "skip")]
    per_seed = [seed_summary(s, r) for s, r in zip(seeds, results)]
    if not judged:
        first = results[0]
        return dataclasses.replace(
            first,
            message=f"every seed: {first.message}" if first.message else first.message,
            details={"per_seed": per_seed, "seeds": seeds},
        )
    missing = [(s, r) for s, r in judged if "evidence" not in r.details]
    if missing:
        s, r = missing[0]
        return dataclasses.replace(
            r, message=f"seed {s}: {r.message}", details={**r.details, "per_seed": per_seed, "seeds": seeds}
        )
    used_seeds = [s for s, _ in judged]
    used = [r for _, r in judged]
    short = short_of_evidence(used_seeds, used, left_out)
    if short is not None:
        return dataclasses.replace(short, details={**short.details, "per_seed": per_seed})
    decision = decide([r.details["evidence"] for r in used], alpha)
    kind = used[0].details["evidence"]["kind"]
    reference = decision.reference if decision.reference is not None else _mean([r.reference for r in used])
    failing = [s for s, r in judged if r.verdict == "fail"]
    message = f"pooled over seeds {used_seeds}: {decision.summary}" if decision.rejected else ""
    if decision.rejected and failing:
        message += f" (on their own, seed{'s' if len(failing) > 1 else ''} {', '.join(map(str, failing))} failed)"
    if left_out:
        note = (
            f"seed{'s' if len(left_out) > 1 else ''} {', '.join(map(str, left_out))} left out: "
            f"{results[seeds.index(left_out[0])].message}"
        )
        message = f"{message}; {note}" if message else note
    details = {
        "seeds": used_seeds,
        "left_out_seeds": left_out,
        "seeds_failed_alone": failing,
        "pooled_statistic": decision.statistic,
        "pooled_p_value": decision.p_value,
        "pooled_test": decision.summary,
        "per_seed": per_seed,
    }
    if decision.part is not None:  # a test over parts (attacker sizes k): whose score, reference and MDE are shown
        details["score_part"] = decision.part
    first = used[0]
    result = CheckResult(
        check=first.check,
        verdict="fail" if decision.rejected else "pass",
        score=decision.score,
        stderr=decision.stderr,
        reference=reference,
        reference_stderr=decision.reference_stderr,
        direction=first.direction,
        rule=f"{first.rule}; pooled over seeds {used_seeds} ({HOW[kind]})",
        message=message,
        details=details,
        reference_label=first.reference_label,
        metric=first.metric,
        unit=first.unit,
    )
    return with_mde(pooled_power(result, used), [r.details["evidence"] for r in used], alpha)


def pool_check(
    check: str,
    seeds: list[int],
    results: list[CheckResult],
    utility: list[CheckResult | None],
    alpha: float,
    utility_alpha: float,
    family_rule: str = "",
) -> CheckResult:
    """One test's verdict from its seeds' own results, as the suite reports it.

    `results` are the seeds' unpooled results of `check`, `utility` the utility results a removal
    check is conditioned on (None where it did not run), `alpha` the check's level (already divided
    for the family of exact-null tests, see `checks.family`) and `family_rule` the sentence saying so.
    A pure function of its arguments, so that the audit session and `unlearn-audit calibrate --engine
    ray` (which pools one-seed reports after the fact, `checks.seed_parts`) give the same verdicts.
    """
    result = pool(seeds, results, alpha)
    result = dataclasses.replace(result, details={**result.details, "alpha": alpha})  # the level it was judged at
    if result.verdict in ("pass", "fail") and result.score is not None:
        result = dataclasses.replace(result, rule=result.rule + family_rule)
    measured = [i for i, u in enumerate(utility) if u is not None]  # seeds where the removal check ran
    if check in REMOVAL_CHECKS and measured:
        pooled_utility = pool([seeds[i] for i in measured], [u for u in utility if u is not None], utility_alpha)
        result = conditioned_on_utility(result, pooled_utility)
        if len(seeds) > 1:  # each seed's own line also says what its utility rule found
            per_seed = [
                {**e, "verdict": conditioned_on_utility(results[i], utility[i]).verdict}  # type: ignore[arg-type]
                if utility[i] is not None
                else e
                for i, e in enumerate(result.details.get("per_seed", []))
            ]
            result = dataclasses.replace(result, details={**result.details, "per_seed": per_seed})
    return result


def pooled_meta(metas: list[dict[str, Any]]) -> dict[str, Any]:
    """A test's run metadata: one seed's as it is; several seeds' as the first's, each seed's in `per_seed`,
    and their unlearn() time added up."""
    if len(metas) == 1:
        return dict(metas[0])
    return {**metas[0], "per_seed": metas, "unlearn_seconds": sum(m["unlearn_seconds"] or 0 for m in metas)}


def short_of_evidence(seeds: list[int], results: list[CheckResult], left_out: list[int]) -> CheckResult | None:
    """An xfail result if the judged `results` together hold fewer units than their evidence needs, else None.

    So far only the `prediction` evidence of Witches' Brew says what it needs (`min_k` validated
    targets): with fewer the test has no power worth a verdict. `cifar10-resnet18` brews one target
    per poisoned model, so its tests reach that count by pooling seeds.
    """
    evidence: list[Any] = [r.details.get("evidence") for r in results if r.verdict not in ("xfail", "skip")]
    if not evidence or any(not isinstance(e, dict) or e.get("kind") != "prediction" for e in evidence):
        return None
    needed = max(int(e.get("min_k", 1)) for e in evidence)
    have = sum(int(e["k"]) for e in evidence)
    if have >= needed:
        return None
    first = results[0]
    note = (
        f" (left out, not judged: seed{'s' if len(left_out) != 1 else ''} {', '.join(map(str, left_out))})"
        if left_out
        else ""
    )
    return CheckResult(
        check=first.check,
        verdict="xfail",
        score=None,
        stderr=None,
        reference=None,
        reference_stderr=None,
        direction=first.direction,
        rule=f"the test needs at least {needed} validated targets over the seeds it pools",
        message=(
            f"only {have} validated target{'s' if have != 1 else ''} over seed{'s' if len(seeds) != 1 else ''} "
            f"{', '.join(map(str, seeds))}{note}; the test needs {needed} to judge removal: pool more seeds "
            f"(--audit-seeds)"
        ),
        details={
            "seeds": seeds,
            "left_out_seeds": left_out,
            "validated_targets": have,
            "needed_targets": needed,
            "per_seed": [seed_summary(s, r) for s, r in zip(seeds, results)],
        },
        reference_label=first.reference_label,
        metric=first.metric,
        unit=first.unit,
    )


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None
