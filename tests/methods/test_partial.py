"""Partial-removal controls on the real `tiny` fixtures: a method that keeps part of a poison fails the check
whose detectable effect its residual exceeds (a default one-seed run), and the message names the excess."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearn_audit.methods.partial import PartialRetrain

CONTROL = """
from unlearn_audit.methods.partial import PartialRetrain

def KeepSix():
    return PartialRetrain(keep=0.06)  # 5 of tiny's 75 backdoor poisons
"""


def test_partial_retrain_refuses_a_fraction_outside_0_1() -> None:
    with pytest.raises(ValueError, match=r"keep is a fraction in \[0, 1\]"):
        PartialRetrain(keep=1.5)


def test_a_backdoor_that_comes_back_by_more_than_the_mde_fails_relearning_resistant(
    pytester: pytest.Pytester, audit_env: Path, prepared_tiny_cache: Path
) -> None:
    """5 of 75 poisons kept: on seed 0 the attack success after relearning with k = 10 is about 0.26 above the
    25 clean models' mean (t about 5 against a critical value of 3.7); the default run's MDE there is about
    0.21 and the test fails it."""
    pytester.makepyfile(partial_controls=CONTROL)
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        "--unlearner",
        "partial_controls:KeepSix",
        "-k",
        "backdoor and relearning",
        "--audit-report",
        str(report),
        "-p",
        "no:hypothesispytest",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    (r,) = json.loads(report.read_text())["results"]
    assert r["outcome"] == "failed" and r["details"]["alpha"] == pytest.approx(0.01 / 4)
    k10 = next(e for e in r["details"]["relearning"] if e["k"] == 10)
    excess = k10["method"] - k10["population_mean"]
    assert k10["failed"] and excess > 0.15
    assert 0.15 < r["details"]["mde_parts"]["k=10"] < 0.25
    assert "the poison comes back under relearning" in r["message"]
