"""benchmarks/shared_null_effect.py: the summary of what sharing Witches' Brew's null changes (the measuring part
trains ~30 models a seed and is a benchmark, not a test)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("shared_null_effect", REPO / "benchmarks" / "shared_null_effect.py")
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def seed(minus: list[list[float]], whole: list[list[float]], shares: list[float], validated: list[bool]) -> dict:
    return {
        "null_without_poisons": minus,
        "null_whole_clean_set": whole,
        "removed_share": shares,
        "validated": validated,
    }


def test_identical_nulls_do_not_shift_and_a_higher_null_shifts_up(module) -> None:  # type: ignore[no-untyped-def]
    minus = [[-2.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]  # 3 models x 2 targets (margins)
    same = module.summarise([seed(minus, minus, [0.15, 0.4], [True, False])])
    assert same["all_targets"]["targets"] == 2 and same["all_targets"]["shift_null_sds"] == 0.0
    higher = [[m + 1.0 for m in row] for row in minus]
    up = module.summarise([seed(minus, higher, [0.15, 0.4], [True, False])])
    assert up["all_targets"]["shift_null_sds"] > 0.5
    # Groups: by whether the target was validated and by the share of its class the poisons took out.
    assert up["validated_targets"]["targets"] == 1 and up["class_share_at_most_20pct"]["targets"] == 1
    assert up["class_share_above_20pct"]["mean_removed_share"] == pytest.approx(0.4)
    lower = [[m - 1.0 for m in row] for row in minus]
    assert module.summarise([seed(minus, lower, [0.15, 0.4], [True, True])])["all_targets"]["shift_null_sds"] < -0.5
