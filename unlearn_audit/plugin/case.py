"""One audit test case: (unlearner spec, profile, scenario, seeds, check), and how it is judged.

This module imports only pytest; the heavy session (torch) is created on first use.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from unlearn_audit.plugin.state import run_key
from unlearn_audit.protocol import DEFAULT_BUDGET_FRACTION
from unlearn_audit.reports.record import RESULT_PROPERTY, seeds_range

if TYPE_CHECKING:
    from unlearn_audit.checks import CheckResult


@dataclass(frozen=True)
class AuditCaseParams:
    spec: str
    profile: str
    scenario: str
    seeds: tuple[int, ...]  # judged together: their evidence is pooled into one verdict
    check: str
    budget: float = DEFAULT_BUDGET_FRACTION
    show_budget: bool = False  # put the budget in the test id (when several budgets run)

    @property
    def id(self) -> str:
        suffix = f"-budget{self.budget:g}" if self.show_budget else ""
        return f"{self.spec}-{self.profile}-{self.scenario}-{seeds_label(self.seeds)}{suffix}"

    def record(self) -> dict[str, Any]:
        """The case's fields as a result record names them (see `unlearn_audit.reports.record`)."""
        return {
            "unlearner": self.spec,
            "check": self.check,
            "scenario": self.scenario,
            "profile": self.profile,
            "seed": self.seeds[0] if len(self.seeds) == 1 else None,
            "seeds": list(self.seeds),
            "budget": self.budget,
        }

    @property
    def group(self) -> str:
        """Cases that share their unlearn() calls (and so one shard, and one xdist worker)."""
        return f"{self.spec}|{self.profile}|{self.scenario}|{seeds_label(self.seeds)}|{self.budget:g}"


def case_of(item: pytest.Item) -> AuditCaseParams | None:
    """The audit case a collected test judges, None for any other test."""
    case = getattr(getattr(item, "callspec", None), "params", {}).get("audit_case")
    return case if isinstance(case, AuditCaseParams) else None


def seeds_label(seeds: tuple[int, ...]) -> str:
    """`seed3` for one seed, `seeds0-4` for a range, `seeds1,5,9` otherwise (as test ids show them)."""
    return ("seed" if len(seeds) == 1 else "seeds") + seeds_range(seeds)


@dataclass
class AuditCase:
    """What a conformance test receives: `judge()` runs the check and turns its verdict into the test outcome."""

    params: AuditCaseParams
    config: pytest.Config
    node: pytest.Item

    def run(self) -> tuple[CheckResult, dict[str, Any]]:
        p = self.params
        return self.config.stash[run_key].session.run_check(
            p.check, p.spec, p.scenario, p.seeds, p.budget, nodeid=self.node.nodeid
        )

    def judge(self) -> CheckResult:
        result, meta = self.run()
        self._show_unlearn_output(meta)
        judged: dict[str, Any] = {"result": result.to_json(), "meta": meta}
        settings = self.config.stash[run_key].settings
        comparison = None
        if settings.compare_with_baseline and settings.baseline:
            from unlearn_audit.reports.baseline import compare_with_baseline
            from unlearn_audit.reports.record import OUTCOME_OF_VERDICT, ResultRecord

            current = ResultRecord(
                nodeid=self.node.nodeid,
                **self.params.record(),
                outcome=OUTCOME_OF_VERDICT[result.verdict],
                score=result.score,
                stderr=result.stderr,
                direction=result.direction,
                meta=meta,
            )
            comparison = compare_with_baseline(current, settings.baseline)
            judged["baseline"] = comparison
        self.node.user_properties.append((RESULT_PROPERTY, json.dumps(judged)))
        for key in ("score", "stderr", "reference", "rule"):
            self.node.user_properties.append((f"audit.{key}", getattr(result, key)))
        text = printable(result.explain())  # it quotes what the method raised
        if comparison is not None and comparison.get("regressed"):
            text += "\n" + comparison["message"]
            pytest.fail(text, pytrace=False)
        if result.verdict == "fail" and comparison is not None and comparison.get("baseline_failed"):
            # A regression gate fails on what got worse, not on what was already known to fail
            # (like scikit-learn's expected failures): same verdict, no significant change.
            how = (
                "not compared: the baseline's fixture is another build"
                if comparison.get("status") == "other fixture"
                else "did not get significantly worse"
            )
            pytest.xfail(f"known failure: it also failed in the baseline and {how}\n" + text)
        if result.verdict == "fail":
            pytest.fail(text, pytrace=False)
        if result.verdict == "xfail":
            pytest.xfail(text)
        if result.verdict == "skip":
            pytest.skip(text)
        return result

    def _show_unlearn_output(self, meta: dict[str, Any]) -> None:
        """What the method printed (and warned) in unlearn(), in the report of the one test of its case that
        shows it: as pytest shows a test's own output (under a failure, with -rA or -rP), and at once with -s.
        A method that failed has it in its failure message instead."""
        capture_off = self.config.getoption("capture", default="fd") == "no"
        for seed_meta in meta.get("per_seed", [meta]):
            output = seed_meta.get("unlearn_output") or {}
            if not output or seed_meta.get("unlearn_output_in") != self.node.nodeid:
                continue
            label = f"unlearn() of seed {seed_meta.get('seed')}"
            texts = {name: printable(str(output.get(name) or "")) for name in ("stdout", "stderr")}
            texts["warnings"] = printable("\n".join(output.get("warnings") or []))
            for name, text in texts.items():
                if not text:
                    continue
                self.node.add_report_section("call", f"{name} of {label}", text)
                if capture_off:
                    print(f"\n--- {name} of {label} ---\n{text.rstrip()}")


def printable(text: str) -> str:
    """`text` with its control characters but newline and tab escaped (ESC as `\\x1b`): what a method prints or
    raises reaches the user's terminal through the harness, and must not move its cursor, clear its
    screen or draw a fake "PASSED" line over the verdict (red-teamed)."""
    return "".join(
        c if c in "\n\t" or unicodedata.category(c) != "Cc" else c.encode("unicode_escape").decode() for c in text
    )
