"""What a run keeps of each seed so that its results can be pooled with other runs' afterwards.

A pooled test (`checks.pooling.pool_check`) needs every seed's own, unpooled results: the check's
result with its evidence, and the utility result a removal check is conditioned on. A report keeps
only the pooled verdict, so a run asked to (`--audit-keep-seed-parts`, used by `unlearn-audit
calibrate --engine ray`, which runs one seed per task) also records these parts in each result's
metadata (`meta["seed_parts"]`), and `reports.assemble` pools the parts of several one-seed reports
into exactly the report of one run over all the seeds.

The parts are stored as a JSON string that keeps NaN and infinity (the report itself is strict
JSON, where they become null): an infinite effect means "certain power" to the pooling code, so
the parts must reach it as the session had them, or the pooled details could differ.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from unlearn_audit.checks.base import CheckResult

SEED_PARTS_KEY = "seed_parts"
"""The key of a result's metadata that holds its seeds' parts."""


@dataclass(frozen=True)
class SeedParts:
    """One test's inputs to `pool_check`, for the seeds one run judged."""

    alpha: float  # the check's level in that run (already divided for the family of exact-null tests)
    utility_alpha: float
    family_rule: str
    seeds: tuple[int, ...]
    results: tuple[CheckResult, ...]
    utility: tuple[CheckResult | None, ...]

    def to_text(self) -> str:
        return json.dumps(
            {
                "alpha": self.alpha,
                "utility_alpha": self.utility_alpha,
                "family_rule": self.family_rule,
                "seeds": list(self.seeds),
                "results": [dataclasses.asdict(r) for r in self.results],
                "utility": [dataclasses.asdict(u) if u is not None else None for u in self.utility],
            },
            allow_nan=True,
        )

    @classmethod
    def from_text(cls, text: str) -> SeedParts:
        data = json.loads(text)
        return cls(
            float(data["alpha"]),
            float(data["utility_alpha"]),
            str(data["family_rule"]),
            tuple(data["seeds"]),
            tuple(_result(r) for r in data["results"]),
            tuple(_result(u) if u is not None else None for u in data["utility"]),
        )

    def joined(self, other: SeedParts) -> SeedParts:
        """These seeds' parts followed by `other`'s: the test must be judged the same way in both runs."""
        for name in ("alpha", "utility_alpha", "family_rule"):
            if getattr(self, name) != getattr(other, name):
                raise ValueError(
                    f"the runs judged this test differently ({name}: {getattr(self, name)!r} vs "
                    f"{getattr(other, name)!r}); were they runs of the same profile and budgets?"
                )
        overlap = set(self.seeds) & set(other.seeds)
        if overlap:
            raise ValueError(f"seed(s) {sorted(overlap)} judged in two runs")
        return dataclasses.replace(
            self,
            seeds=self.seeds + other.seeds,
            results=self.results + other.results,
            utility=self.utility + other.utility,
        )


def _result(data: dict[str, Any]) -> CheckResult:
    return CheckResult(**data)
