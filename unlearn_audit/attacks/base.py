"""The attack interface: what a poisoning attack owns, so that nothing outside `attacks/` asks its kind.

A scenario recipe names its attack in `[attack] kind = "..."`; `unlearn_audit.attacks.registry`
finds the `Attack` registered under that kind (built in, or from another package through the
`unlearn_audit.attacks` entry-point group). The attack then owns every attack-specific step of
the audit:

- `poison`: step 1 of the protocol of Pawelczyk et al., the poisoned training set, the forget set
  and the attack's secret (what the checks need and the unlearner never sees);
- `after_training`: optional extra models the attack's checks need (Witches' Brew's clean
  reference models), trained by the build with the fixture's own recipe;
- `validate`: did the attack work on the poisoned original? a fixture where it did not is xfail,
  unless `fallback` names a recipe to rebuild it with (recorded in the fixture's meta);
- `measure_poison`: the poison left in a model, as one number with its uncertainty and the kind of
  null it has; relearning and the interpolation path re-measure it;
- `checks`: the checks able to judge this attack (a recipe lists a subset).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    import torch
    from torch import nn

    from unlearn_audit.profiles.split import Split
    from unlearn_audit.protocol import ExampleSet
    from unlearn_audit.scenarios.fixture import Fixture
    from unlearn_audit.scenarios.recipes import ScenarioRecipe
    from unlearn_audit.training.numerics import LoopNumerics

ProgressCallback = Callable[..., None]
"""(stage, done, total, seconds elapsed) while a fixture builds."""

Memo = Callable[["nn.Module", str, Callable[[], Any]], Any]
"""`measure(model, name, compute)`: a measurement memoised per unchanging model (the session's)."""


def no_memo(model: nn.Module, name: str, compute: Callable[[], Any]) -> Any:
    """For models that change between measurements (relearning, interpolation): compute every time."""
    return compute()


@dataclass(frozen=True)
class BuildContext:
    """What an attack may use while it poisons: the recipe, the clean data, and the build's machinery."""

    recipe: ScenarioRecipe
    split: Split
    seed: int
    generator: torch.Generator  # the attack's own randomness, seeded from the fixture seed
    device: Any
    progress: ProgressCallback | None
    train: Callable[[ExampleSet, str, str], nn.Module]
    """`train(data, name, label)`: a model of the fixture's architecture trained from scratch with the
    recipe, seeded from (fixture seed, name), progress reported under `label` (the attacker's models)."""
    model_factory: Callable[[], nn.Module]
    shared_model: Callable[[str, str], nn.Module] | None = None
    """`shared_model(name, label)`: a clean model trained on the whole clean training set from a seed of its own
    (not the fixture's), trained once and shared by every seed's build (`scenarios.shared_models`); on the build's
    device, progress reported under `label`. None where the build offers no store."""
    force_precision: bool = False
    """Run a bf16 attack loop in bf16 on a CPU too (`attack_numerics`): CPU measurements and tests of the GPU path,
    never a cached fixture."""

    def attack_numerics(self) -> LoopNumerics:
        """The numerics of the attack's own optimisation loops (brewing, GradPC, canceling): `[attack] precision`.

        "fp32" (the default) computes as the papers' code does. "bf16" runs them in bfloat16 autocast with the
        training recipe's memory format, on CUDA only, as every other loop of the profile
        (`training.numerics`): the double-backward steps of these attacks are expected to be the build's most
        expensive loops on a GPU. On a CPU both are fp32 (unless `force_precision`), so a CPU profile's fixtures
        do not depend on it.
        """
        from dataclasses import replace

        from unlearn_audit.protocol import PRECISIONS
        from unlearn_audit.training.numerics import LoopNumerics

        precision = self.recipe.attack.get("precision", "fp32")
        if precision not in PRECISIONS:
            raise ValueError(f"[attack] precision must be one of {PRECISIONS}, got {precision!r}")
        training = replace(self.recipe.training, precision=precision)
        return LoopNumerics.of(training, self.device, force_precision=self.force_precision)


@dataclass(frozen=True)
class PoisonedTrainingSet:
    """Step 1: the training set the original model is trained on, and what the harness keeps secret."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    forget: torch.Tensor  # indices into train_x of the poisons (the forget set)
    clean_train_x: torch.Tensor  # the inputs before poisoning, row for row with train_x
    secret: dict[str, torch.Tensor] = field(default_factory=dict)
    extra_weights: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # stored as the fixture's meta["attack"] when not empty


@dataclass(frozen=True)
class PoisonMeasurement:
    """The poison left in one model. Larger means more poison left.

    `null` says how the harness can test it: "proportion" (a count of `hits` in `n` trials, compared
    with the reference's by a test of proportions) or "unit_normal" (a mean of `n` scores that are
    exactly N(0, 1) once the poison is gone: an exact z-test with no reference needed).
    """

    value: float
    stderr: float
    n: int
    null: Literal["proportion", "unit_normal"]
    hits: float | None = None  # a count; the mean count where several measurements are averaged


class Attack(ABC):
    """One poisoning attack. Subclass it, set the class attributes, and register the class."""

    kind: ClassVar[str]
    """The recipe's `[attack] kind`."""
    poison_name: ClassVar[str]
    """What `measure_poison` measures, as the checks' messages name it ("attack success", "mean GUS")."""
    checks: ClassVar[tuple[str, ...]]
    """The checks that can judge this attack."""
    measures_forget_set: ClassVar[bool] = False
    """True when the poison metric is read on the forget-set samples themselves (Gaussian poisons): the
    relearning check then measures it on the poisons it did not give to the attacker."""
    targeted_reference: ClassVar[Literal["retrain", "clean_models"] | None] = None
    """For targeted attacks: what `targeted_removed` compares with (see `targeted_hits` and `target_scores`)."""

    @abstractmethod
    def poison(self, ctx: BuildContext) -> PoisonedTrainingSet:
        """Poison the clean training set of `ctx.split`."""

    def after_training(
        self,
        ctx: BuildContext,
        poisoned: PoisonedTrainingSet,
        fit: Callable[[str, ExampleSet], nn.Module],
        tensors: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """More secret tensors, computed once the original and retrain exist (default: none).
        `fit(stage, data)` trains one more model of the fixture like retrain, from its own seed."""
        return {}

    @abstractmethod
    def validate(
        self, recipe: ScenarioRecipe, original: nn.Module, retrain: nn.Module, tensors: dict[str, torch.Tensor]
    ) -> dict[str, Any]:
        """`effective` (did the attack work on the poisoned original?), the `rule` that decided, and figures."""

    def fallback(self, recipe: ScenarioRecipe, validation: dict[str, Any]) -> tuple[ScenarioRecipe, str] | None:
        """After `validate`: a recipe to rebuild the fixture with (same seed) and the reason, or None (the
        default: a fixture whose attack did not work stays as it is, and its checks xfail). The build records
        the reason and the first attempt's validation as the fixture's meta["fallback"]."""
        return None

    @abstractmethod
    def measure_poison(
        self, fixture: Fixture, model: nn.Module, held_out: torch.Tensor | None = None, memo: Memo = no_memo
    ) -> PoisonMeasurement:
        """The poison left in `model` (never memoised: relearning and interpolation measure models that
        change). `held_out`: positions in the forget set to measure on (only attacks with
        `measures_forget_set`); `memo`: the session's memo, for measurements of the fixture's own,
        unchanging models that the metric needs (e.g. which targets the original validated)."""

    # -- targeted attacks (targeted_removed) -----------------------------------------------------
    def targeted_hits(self, fixture: Fixture, model: nn.Module) -> torch.Tensor:
        """`targeted_reference == "retrain"`: per-input success of the attack on held-out inputs."""
        raise NotImplementedError(f"attack {self.kind!r} has no held-out attack inputs")

    def target_scores(self, fixture: Fixture, model: nn.Module, memo: Memo = no_memo) -> torch.Tensor:
        """`targeted_reference == "clean_models"`: a score per validated target (higher: attack works)."""
        raise NotImplementedError(f"attack {self.kind!r} has no per-target scores")

    def clean_model_target_scores(self, fixture: Fixture, memo: Memo = no_memo) -> torch.Tensor:
        """`targeted_reference == "clean_models"`: the same scores of clean models (models x targets)."""
        raise NotImplementedError(f"attack {self.kind!r} has no clean reference models")

    def target_notes(self, fixture: Fixture) -> dict[str, Any]:
        """What `targeted_removed` reports about how the targets were chosen (default: nothing)."""
        return {}
