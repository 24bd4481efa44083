"""Poisoning attacks, usable without pytest: each returns the poisoned training set and its secret."""

from .backdoor import TriggerBackdoor, apply_trigger, make_backdoor
from .gaussian import GaussianPoison, make_gaussian_poison

__all__ = ["GaussianPoison", "TriggerBackdoor", "apply_trigger", "make_backdoor", "make_gaussian_poison"]
