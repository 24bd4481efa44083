"""`unlearn-audit plot`: PNGs from a synthetic JSON report (no audit run needed)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib")

from unlearn_audit.tools import plot  # noqa: E402
from unlearn_audit.tools.cli import main as cli_main  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METHODS = ["unlearn_audit.methods:NoOp", "unlearn_audit.methods:GradientAscent"]


def _result(
    unlearner: str,
    check: str,
    scenario: str,
    score: float,
    details: dict[str, Any],
    budget: float = 0.1,
    outcome: str = "passed",
    rule: str = "",
    metric: str = "",
    unit: str = "",
) -> dict[str, Any]:
    result = {
        "nodeid": f"test_{check}.py::x[{unlearner}-tiny-{scenario}-seed0]",
        "unlearner": unlearner,
        "check": check,
        "scenario": scenario,
        "profile": "tiny",
        "seed": 0,
        "budget": budget,
        "outcome": outcome,
        "verdict": "pass" if outcome == "passed" else "fail",
        "score": score,
        "stderr": 0.02,
        "reference": 0.05,
        "reference_stderr": 0.01,
        "direction": "lower_is_better",
        "rule": rule,
        "message": "",
        "details": details,
    }
    if metric:  # a report of schema 3; before it, results have no metric and unit
        result.update(metric=metric, unit=unit)
    return result


def _relearning(scenario: str, level: float) -> dict[str, Any]:
    steps = [0, 20, 40]
    return {
        "worst_k": 10,
        "steps": 40,
        "relearning": [
            {
                "k": k,
                "method": level,
                "method_stderr": 0.01,
                "retrain": 0.0,
                "retrain_stderr": 0.0,
                "failed": level > 0.5,
                "method_curve": [[s, level * s / 40] for s in steps],
                "retrain_curve": [[s, 0.01 * k * s / 40] for s in steps],
            }
            for k in (0, 10)
        ],
    }


def _path(bump: float) -> dict[str, Any]:
    alphas = [i / 4 for i in range(5)]
    return {
        "alphas": alphas,
        "test_loss": [0.1 + bump * math.sin(math.pi * a) for a in alphas],
        "test_accuracy": [0.97 - bump * math.sin(math.pi * a) for a in alphas],
        "poison": [1 - a for a in alphas],
    }


POISON = {"backdoor": ("attack success", "fraction"), "gaussian": ("mean GUS", "z-score")}


def synthetic_report(budgets: tuple[float, ...] = (0.1,), schema: int = 3) -> dict[str, Any]:
    """A report of today's layout, or (`schema` 1) one whose results say nothing of their metric and unit."""

    def declared(metric: str, unit: str) -> dict[str, str]:
        return {"metric": metric, "unit": unit} if schema >= 3 else {}

    results = []
    for budget in budgets:
        for i, u in enumerate(METHODS):
            level = 0.9 if i == 0 else 0.3
            for scenario, rule in (
                ("backdoor", "attack success exceeds retrain's"),
                ("gaussian", "the mean GUS of the held-out"),
            ):
                results.append(
                    _result(
                        u,
                        "relearning_resistant",
                        scenario,
                        level,
                        _relearning(scenario, level),
                        budget,
                        "failed" if level > 0.5 else "passed",
                        rule,
                        **declared(*POISON[scenario]),
                    )
                )
                results.append(
                    _result(
                        u,
                        "not_mode_connected",
                        scenario,
                        0.01 * i,
                        {
                            "l2_distance": 0.5 * i,
                            "retrain_l2_distance": 18.0,
                            "l2_ratio": 0.03 * i,
                            "barrier_alpha": 0.5,
                            "path": _path(0.01 * i),
                            "retrain_path": _path(0.08),
                        },
                        budget,
                        **declared("test-loss barrier on the linear path", "nats"),
                    )
                )
            results.append(
                _result(
                    u,
                    "gaussian_leakage",
                    "gaussian",
                    0.7,
                    {
                        "tpr_at_fpr_0.01": 0.12,
                        "original_gus": 0.77,
                        "retrain_gus": 0.0,
                        "scores": [round(math.sin(j) + 0.7 * (1 - i), 4) for j in range(60)],
                    },
                    budget,
                    **declared("mean GUS of the forget-set poisons", "z-score"),
                )
            )
            results.append(
                _result(
                    u,
                    "budget_respected",
                    "backdoor",
                    900.0 * i,
                    {"fraction_used": 0.2 * i},
                    budget,
                    **declared("example-gradients spent", "example-gradients"),
                )
            )
    return {
        "schema_version": schema,
        "tool": "unlearn-audit",
        "options": {"unlearners": METHODS, "profile": "tiny"},
        "results": results,
    }


def _write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(doc))
    return path


def _assert_pngs(directory: Path, names: list[str]) -> None:
    for name in names:
        f = directory / name
        assert f.is_file(), f"missing {name}; have {sorted(p.name for p in directory.iterdir())}"
        data = f.read_bytes()
        assert len(data) > 1000 and data[:8] == PNG_MAGIC, name


@pytest.mark.parametrize("schema", [3, 1])
def test_plots_from_synthetic_report(tmp_path: Path, capsys: pytest.CaptureFixture[str], schema: int) -> None:
    report = _write(tmp_path, synthetic_report(schema=schema))
    out = tmp_path / "p"
    assert plot.main(argparse.Namespace(report=report, out=out)) == 0
    expected = [
        "relearning-backdoor-seed0.png",
        "relearning-gaussian-seed0.png",
        "interpolation-backdoor-seed0.png",
        "interpolation-gaussian-seed0.png",
        "gus-gaussian-seed0.png",
        "scores-relearning_resistant.png",
        "scores-not_mode_connected.png",
        "scores-gaussian_leakage.png",
        "scores-budget_respected.png",
    ]
    _assert_pngs(out, expected)
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    printed = capsys.readouterr().out
    assert all(name in printed for name in expected)


def test_budget_suffix_and_cli_default_out(tmp_path: Path) -> None:
    report = _write(tmp_path, synthetic_report(budgets=(0.1, 0.5)))
    assert cli_main(["plot", str(report)]) == 0
    out = tmp_path / "report-plots"
    _assert_pngs(
        out,
        [
            f"{kind}-{s}-seed0-budget{b}.png"
            for kind, s in (("relearning", "backdoor"), ("interpolation", "gaussian"), ("gus", "gaussian"))
            for b in ("0.1", "0.5")
        ],
    )


def test_missing_or_invalid_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert plot.main(argparse.Namespace(report=tmp_path / "nope.json", out=None)) == 2
    assert "report not found" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert plot.main(argparse.Namespace(report=bad, out=None)) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert plot.main(argparse.Namespace(report=_write(tmp_path, {"x": 1}), out=None)) == 2
    assert "not an unlearn-audit JSON report" in capsys.readouterr().err
    assert not (tmp_path / "nope-plots").exists()


def test_missing_matplotlib_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    assert plot.main(argparse.Namespace(report=_write(tmp_path, synthetic_report()), out=tmp_path / "p")) == 2
    assert 'pip install "unlearn-audit[plot]"' in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_axes_come_from_the_recorded_metric_and_unit() -> None:
    results = plot.results_of(synthetic_report())
    relearning = [r for r in results if r["check"] == "relearning_resistant"]
    backdoor = plot.poison_axis("backdoor", [r for r in relearning if r["scenario"] == "backdoor"])
    gaussian = plot.poison_axis("gaussian", [r for r in relearning if r["scenario"] == "gaussian"])
    assert (backdoor.label, backdoor.fraction, backdoor.null_at_zero) == ("attack success (fraction)", True, False)
    assert (gaussian.label, gaussian.fraction, gaussian.null_at_zero) == ("mean GUS (z-score)", False, True)
    budget = plot.score_axis("budget_respected", [r for r in results if r["check"] == "budget_respected"])
    assert budget.label == "example-gradients spent (example-gradients)"


def test_the_recorded_unit_wins_over_the_rule_and_the_scenario_name() -> None:
    """A scenario called "gaussian" whose poison is an attack success rate is drawn as a fraction: no guessing."""
    r = _result(
        "m:M",
        "relearning_resistant",
        "gaussian_blend",
        0.4,
        {},
        rule="mean GUS",
        metric="attack success",
        unit="fraction",
    )
    assert plot.poison_axis("gaussian_blend", [r]) == plot.Axis("attack success", "fraction")


def test_reports_without_metric_and_unit_fall_back_to_the_old_guess() -> None:
    results = plot.results_of(synthetic_report(schema=1))
    assert all(r["metric"] == "" and r["unit"] == "" for r in results)  # read with the defaults
    by = {
        s: [r for r in results if r["check"] == "relearning_resistant" and r["scenario"] == s]
        for s in ("backdoor", "gaussian")
    }
    assert plot.poison_axis("backdoor", by["backdoor"]) == plot.LEGACY_ATTACK_SUCCESS
    assert plot.poison_axis("gaussian", by["gaussian"]) == plot.LEGACY_GUS
    assert plot.poison_axis("gaussian", []) == plot.LEGACY_GUS  # no rule to go by: the scenario's name
    assert plot.score_axis("utility_preserved", []).label == "clean test accuracy"
