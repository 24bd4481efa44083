"""One audit test case: (unlearner spec, profile, scenario, seed, check), and how it is judged.

This module imports only pytest; the heavy session (torch) is created on first use.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .checks import CheckResult

PROPERTY_KEY = "unlearn_audit"


@dataclass(frozen=True)
class AuditCaseParams:
    spec: str
    profile: str
    scenario: str
    seed: int
    check: str

    @property
    def id(self) -> str:
        return f"{self.spec}-{self.profile}-{self.scenario}-seed{self.seed}"

    @property
    def group(self) -> str:
        """Cases that share one unlearn() call run on the same xdist worker."""
        return f"{self.spec}|{self.profile}|{self.scenario}|{self.seed}"


@dataclass
class AuditCase:
    """What a conformance test receives: `judge()` runs the check and turns its verdict into the test outcome."""

    params: AuditCaseParams
    config: pytest.Config
    node: pytest.Item

    def run(self) -> tuple["CheckResult", dict[str, Any]]:
        from .plugin import get_audit_session

        p = self.params
        return get_audit_session(self.config).run_check(p.check, p.spec, p.scenario, p.seed)

    def judge(self) -> "CheckResult":
        result, meta = self.run()
        record = {**asdict(self.params), "result": result.to_json(), "meta": meta}
        self.node.user_properties.append((PROPERTY_KEY, json.dumps(record)))
        for key in ("score", "stderr", "reference", "rule"):
            self.node.user_properties.append((f"audit.{key}", getattr(result, key)))
        text = result.explain()
        if result.verdict == "fail":
            pytest.fail(text, pytrace=False)
        if result.verdict == "xfail":
            pytest.xfail(text)
        if result.verdict == "skip":
            pytest.skip(text)
        return result
