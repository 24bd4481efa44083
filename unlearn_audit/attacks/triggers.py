"""Held-out triggered inputs of the trigger attacks, in one place for every check that measures attack success.

A trigger attack (the image patch `backdoor`, the text `trigger_word`) is judged on the
held-out test inputs of the non-target classes with the trigger applied; attack success is the
fraction the model assigns to the target class. `targeted_removed`, the poison metric of the
relearning and interpolation checks, and the build-time validation all call
`triggered_test_inputs`, so a new trigger attack adds one branch here.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from unlearn_audit.attacks.backdoor import apply_trigger
from unlearn_audit.attacks.trigger_word import insert_trigger

TRIGGER_ATTACKS = ("backdoor", "trigger_word")


def triggered_test_inputs(attack: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The test inputs whose label is not `attack["target_class"]`, with the attack's trigger applied."""
    kind = attack["kind"]
    mask = tensors["test_y"] != attack["target_class"]
    if kind == "backdoor":
        return apply_trigger(tensors["test_x"][mask], attack["patch_size"], attack["patch_value"])
    if kind == "trigger_word":
        # Insertion points were drawn once at build time (secret.test_positions, one per test input).
        return insert_trigger(tensors["test_x"][mask], tensors["secret.trigger_ids"],
                              tensors["secret.test_positions"][mask], int(tensors["secret.pad_id"]))
    raise ValueError(f"attack kind {kind!r} has no trigger (trigger attacks: {', '.join(TRIGGER_ATTACKS)})")
