"""What a check is (its declaration), what it returns, and what it is given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from unlearn_audit.jsonsafe import finite

if TYPE_CHECKING:
    from torch import nn

    from unlearn_audit.attacks.base import Attack
    from unlearn_audit.engine.runner import UnlearnOutcome
    from unlearn_audit.scenarios.fixture import Fixture

Verdict = Literal["pass", "fail", "xfail", "skip"]
CheckKind = Literal["removal", "other"]

POWER_TARGET = 0.8
"""A check whose power against the unremoved poison is below this says "low power" (`checks.power`)."""

NONE_DETECTED = f"no excess within the score's range is detected with probability {POWER_TARGET:g}"
"""What a report says where a test has no MDE within the score's range (`checks.mde`)."""


@dataclass(frozen=True)
class CheckInfo:
    """What a check is, declared once in its own module as `CHECK = CheckInfo(...)`.

    The suite's list of checks, the removal checks, and the metric and unit a report gives each score all
    follow from these declarations (`unlearn_audit.checks`), so that they cannot drift apart from the code
    that computes the score. The arguments must be literals: the declarations are read from the modules'
    source, without importing them, so that the torch-free parts of the suite know every check.
    """

    name: str
    """The check's name: its module is `unlearn_audit.checks.<name>` and its test `conformance/test_<name>.py`."""
    kind: CheckKind
    """A "removal" check judges whether the poison is gone (and is conditioned on utility);
    "other": utility, compute."""
    metric: str
    """What the score measures, as a plot's axis names it ("mean GUS of the forget-set poisons")."""
    unit: str
    """The score's unit: "fraction" (in [0, 1]), "z-score" (N(0, 1) when the poison is gone), "nats",
    "example-gradients"; empty when it depends on the attack (the check then sets its result's own)."""
    direction: Literal["lower_is_better", "higher_is_better"] = "lower_is_better"
    """Which way the score improves; its results say the same, and so does the record of a case whose
    check could not run (the method failed)."""
    reference: str = "retrain"
    """What the score is compared with, as a result's `reference_label` names it ("retrain", "budget"); a check
    whose reference depends on the scenario ("retrain and 24 clean models") sets its result's own."""


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """A score with its uncertainty, the reference under the same measurement, and the rule.

    Keyword-only, so that `score`/`reference` cannot be swapped: `reference` is what the check
    compares with (retrain's score, the clean models' mean, or the budget), never the method's.
    """

    check: str
    verdict: Verdict
    score: float | None
    stderr: float | None
    reference: float | None
    reference_stderr: float | None
    direction: Literal["lower_is_better", "higher_is_better"]
    rule: str
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    reference_label: str = "retrain"  # what `reference` is: "retrain", "24 clean models", "budget"
    metric: str = ""  # what `score` measures: the check's declared metric, or the attack's poison metric
    unit: str = ""  # its unit ("fraction", "z-score", "nats", "example-gradients"); see `CheckInfo`

    def to_json(self) -> dict[str, Any]:
        return finite(asdict(self))

    def explain(self) -> str:
        """The text a failing test shows: score, uncertainty, reference, rule."""

        def fmt(v: float | None, se: float | None) -> str:
            if v is None:
                return "n/a"
            return f"{v:.4g} ± {se:.2g}" if se is not None else f"{v:.4g}"

        lines = [
            f"{self.check}: {self.verdict.upper()}",
            f"  score      {fmt(self.score, self.stderr)}  ({self.direction.replace('_', ' ')})",
            f"  reference  {fmt(self.reference, self.reference_stderr)}  ({self.reference_label})",
            f"  rule       {self.rule}",
        ]
        mde, part = shown_mde(self.details)
        gap = "excess over" if self.direction == "lower_is_better" else "shortfall below"
        unit = f" {self.unit}" if self.unit else ""
        where = ""
        if part is not None:
            largest = self.details.get("mde")
            where = f" at {part}, as the score" + (
                f" (the largest over the parts: {largest:.3g})" if isinstance(largest, (int, float)) else ""
            )
        if isinstance(mde, (int, float)):
            lines.append(
                f"  MDE        {mde:.3g}{unit}{where}: the smallest {gap} the reference this test detects with "
                f"probability {POWER_TARGET:g}"
            )
        elif part is not None or self.details.get("mde_note"):
            lines.append(f"  MDE        none{where}: {self.details.get('mde_note') or NONE_DETECTED}")
        if self.message:
            lines.append(f"  why        {self.message}")
        shown = {k: v for k, v in self.details.items() if not isinstance(v, (list, dict))}
        if shown:
            lines.append("  details    " + ", ".join(f"{k}={_short(v)}" for k, v in shown.items()))
        return "\n".join(lines)


def shown_mde(details: dict[str, Any]) -> tuple[float | None, str | None]:
    """The MDE that goes with the shown score, and the part it is of (None: the test has no parts).

    A test over parts (the relearning check's attacker sizes k) shows the score of one part (`score_part`), so
    it shows that part's MDE beside it; `mde` stays the largest over the parts, the excess the test detects at
    whichever part it occurs. None where the test has no MDE or none within the score's range."""
    parts, part = details.get("mde_parts"), details.get("score_part")
    if isinstance(parts, dict) and isinstance(part, str) and part in parts:
        value = parts[part]
        return (float(value) if isinstance(value, (int, float)) else None), part
    mde = details.get("mde")
    return (float(mde) if isinstance(mde, (int, float)) else None), None


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@dataclass
class CheckContext:
    """Everything a check may look at. `measure` memoises measurements per (model, name)."""

    fixture: Fixture
    outcome: UnlearnOutcome
    options: dict[str, Any]
    measure: Callable[[nn.Module, str, Callable[[], Any]], Any]

    @property
    def attack(self) -> Attack:
        """The fixture's attack (its poison metric, its targeted evidence)."""
        from unlearn_audit.attacks.registry import get_attack

        return get_attack(self.fixture.recipe.attack["kind"])

    @property
    def model(self) -> nn.Module:
        assert self.outcome.model is not None
        return self.outcome.model
