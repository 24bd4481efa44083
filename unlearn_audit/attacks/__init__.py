"""Poisoning attacks, usable without pytest: each returns the poisoned training set and its secret."""

from unlearn_audit.attacks.backdoor import TriggerBackdoor, apply_trigger, make_backdoor
from unlearn_audit.attacks.gaussian import GaussianPoison, make_gaussian_poison
from unlearn_audit.attacks.trigger_word import TriggerWordPoison, insert_trigger, make_trigger_word
from unlearn_audit.attacks.triggers import TRIGGER_ATTACKS, triggered_test_inputs
from unlearn_audit.attacks.gradient_canceling import (
    GradientCancelingAttack,
    GradientCancelingPoison,
    canceling_objective,
    gradient_canceling_attack,
    gradpc,
    make_gradient_canceling,
)
from unlearn_audit.attacks.witches_brew import (
    MultiTargetBrew,
    WitchesBrewPoison,
    adversarial_margins,
    brew_for_targets,
    brew_poisons,
    gradient_matching_loss,
    make_witches_brew,
    runner_up_classes,
    select_low_margin_targets,
)

__all__ = [
    "GaussianPoison",
    "GradientCancelingAttack",
    "GradientCancelingPoison",
    "TRIGGER_ATTACKS",
    "TriggerBackdoor",
    "TriggerWordPoison",
    "insert_trigger",
    "make_trigger_word",
    "triggered_test_inputs",
    "apply_trigger",
    "canceling_objective",
    "gradient_canceling_attack",
    "gradpc",
    "make_backdoor",
    "make_gaussian_poison",
    "make_gradient_canceling",
    "make_witches_brew",
    "MultiTargetBrew",
    "WitchesBrewPoison",
    "adversarial_margins",
    "brew_for_targets",
    "brew_poisons",
    "gradient_matching_loss",
    "runner_up_classes",
    "select_low_margin_targets",
]
