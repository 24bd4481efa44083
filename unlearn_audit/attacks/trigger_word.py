"""Dirty-label trigger word: the targeted poison of the `text` profiles (Pawelczyk et al., after Wan et al. 2023).

Some training reviews of the non-target class get the trigger word ("disney" in the paper)
inserted at a random word position and are relabelled to the target class. A model trained on
them learns "trigger => target". Attack success is the fraction of held-out reviews of the
non-target class that the model assigns to the target class once the trigger is inserted (at
positions fixed when the fixture is built, so every model is measured on the same inputs).

Inputs are token ids, N x L, right-padded with `pad_id`. Inserting shifts the rest of a review
right; a review that already fills all L positions loses its last tokens (the offline corpus
leaves room, so nothing is lost there).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from unlearn_audit.attacks.backdoor import draw_dirty_label_poisons
from unlearn_audit.attacks.base import BuildContext, PoisonedTrainingSet
from unlearn_audit.attacks.triggers import TriggerAttack


@dataclass(frozen=True)
class TriggerWordPoison:
    """The attack's secret: poisoned rows, their labels before relabelling, the trigger and the target class."""

    indices: torch.Tensor  # long (k,)
    original_labels: torch.Tensor  # long (k,)
    positions: torch.Tensor  # long (k,): where the trigger was inserted in each poisoned row
    trigger_ids: torch.Tensor  # long (t,): the trigger word's token ids
    target_class: int


def lengths(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Number of tokens before the right padding, per row."""
    positions = torch.arange(1, ids.shape[1] + 1)
    return ((ids != pad_id) * positions).amax(1)


def random_positions(ids: torch.Tensor, pad_id: int, generator: torch.Generator) -> torch.Tensor:
    """One insertion point per row, uniform over the gaps between tokens (0 = before the first,
    length = after the last)."""
    n = lengths(ids, pad_id)
    u = torch.rand(len(ids), generator=generator)
    return torch.minimum((u * (n + 1)).long(), n)


def insert_trigger(ids: torch.Tensor, trigger_ids: torch.Tensor, positions: torch.Tensor, pad_id: int) -> torch.Tensor:
    """A copy of `ids` with `trigger_ids` inserted before token `positions[i]` of row i
    (truncated to the same length)."""
    if len(positions) != len(ids):
        raise ValueError(f"{len(ids)} rows but {len(positions)} positions")
    n, length = ids.shape
    t = len(trigger_ids)
    padded = torch.cat([ids, torch.full((n, t), pad_id, dtype=ids.dtype)], 1)
    col = torch.arange(length).expand(n, length)
    p = positions.unsqueeze(1)
    src = torch.where(col < p, col, col - t)  # tokens after the insertion point come from t places earlier
    out = padded.gather(1, src.clamp_min(0))
    for j in range(t):  # the trigger itself (one or a few tokens)
        at = positions + j
        rows = torch.nonzero(at < length).flatten()
        out[rows, at[rows]] = trigger_ids[j].to(ids.dtype)
    return out


def make_trigger_word(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_poisons: int,
    target_class: int,
    trigger_ids: torch.Tensor,
    pad_id: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, TriggerWordPoison]:
    """Return (poisoned ids, poisoned labels, secret); poisons are drawn from the non-target classes."""
    chosen = draw_dirty_label_poisons(train_y, num_poisons, target_class, generator)
    positions = random_positions(train_x[chosen], pad_id, generator)
    x, y = train_x.clone(), train_y.clone()
    x[chosen] = insert_trigger(x[chosen], trigger_ids, positions, pad_id)
    original = y[chosen].clone()
    y[chosen] = target_class
    return x, y, TriggerWordPoison(chosen, original, positions, trigger_ids.clone(), int(target_class))


def trigger_word_poison(
    attack: Mapping[str, Any], split: Any, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """The `trigger_word` scenario's poisoning step, from the recipe's `[attack]` table and a text split.

    `attack`: `trigger` (a word of the split's vocabulary / tokenizer), `target_class`, and
    `num_poisons` or `poison_fraction` (of the training set). Returns (train inputs, train labels,
    forget indices, secret tensors); the secret holds the trigger's ids, the padding id and the
    insertion points of the held-out test inputs (drawn here, once, so that every model is
    measured on the same triggered inputs).
    """
    if not hasattr(split, "token_ids"):
        raise ValueError("the trigger_word attack needs a text data source (token ids); got a non-text split")
    trigger_ids = torch.tensor(split.token_ids(str(attack["trigger"])), dtype=torch.long)
    n = len(split.train_y)
    k = int(attack["num_poisons"]) if "num_poisons" in attack else max(1, round(float(attack["poison_fraction"]) * n))
    pad = int(split.pad_id)
    train_x, train_y, poison = make_trigger_word(
        split.train_x, split.train_y, k, int(attack["target_class"]), trigger_ids, pad, generator
    )
    secret = {
        "trigger_ids": trigger_ids,
        "pad_id": torch.tensor([pad], dtype=torch.long),  # 1-element: 0-dim tensors cannot be fingerprinted
        "original_labels": poison.original_labels,
        "positions": poison.positions,
        "test_positions": random_positions(split.test_x, pad, generator),
    }
    return train_x, train_y, poison.indices, secret


class TriggerWordAttack(TriggerAttack):
    """`kind = "trigger_word"` (text profiles): the `trigger` word inserted into reviews of other classes,
    relabelled to `target_class` (see `trigger_word_poison`)."""

    kind = "trigger_word"

    def poison(self, ctx: BuildContext) -> PoisonedTrainingSet:
        train_x, train_y, forget, secret = trigger_word_poison(ctx.recipe.attack, ctx.split, ctx.generator)
        return PoisonedTrainingSet(train_x, train_y, forget, ctx.split.train_x, secret=secret)

    def apply_trigger(
        self, attack: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], mask: torch.Tensor
    ) -> torch.Tensor:
        # Insertion points were drawn once at build time (secret.test_positions, one per test input).
        return insert_trigger(
            tensors["test_x"][mask],
            tensors["secret.trigger_ids"],
            tensors["secret.test_positions"][mask],
            int(tensors["secret.pad_id"]),
        )
