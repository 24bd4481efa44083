"""Gaussian data poisoning (Pawelczyk et al., Section 4.3).

The attacker adds i.i.d. Gaussian noise to the inputs of a random subset of training samples
and keeps the noise vectors secret. The noise carries no signal about the task, so it barely
changes accuracy, but training leaks it into the model, where the Gaussian Unlearning Score
(`unlearn_audit.metrics.gaussian_unlearning_scores`) detects it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearn_audit.attacks.base import Attack, BuildContext, PoisonedTrainingSet, PoisonMeasurement, no_memo
from unlearn_audit.metrics import gaussian_unlearning_scores
from unlearn_audit.stats import unit_normal_mean_test


@dataclass(frozen=True)
class GaussianPoison:
    """Which training samples were poisoned, and the secret noise added to each (unit variance)."""

    indices: torch.Tensor  # long, (k,)
    noise: torch.Tensor  # float, (k, *input_shape), entries i.i.d. N(0, 1)
    sigma: float  # the poison is x + sigma * noise


def make_gaussian_poison(
    train_x: torch.Tensor, num_poisons: int, sigma: float, generator: torch.Generator
) -> tuple[torch.Tensor, GaussianPoison]:
    """Return (poisoned copy of `train_x`, secret). Inputs are not clipped: the noise stays exactly Gaussian."""
    if not 0 < num_poisons <= len(train_x):
        raise ValueError(f"num_poisons must be in [1, {len(train_x)}], got {num_poisons}")
    indices = torch.randperm(len(train_x), generator=generator)[:num_poisons].sort().values
    noise = torch.randn((num_poisons, *train_x.shape[1:]), generator=generator)
    poisoned = train_x.clone()
    poisoned[indices] += sigma * noise
    return poisoned, GaussianPoison(indices, noise, float(sigma))


class GaussianAttack(Attack):
    """`kind = "gaussian"`: `num_poisons` random training inputs get `sigma` x N(0, I) noise, labels kept.

    Poison metric: the mean Gaussian Unlearning Score of the forget-set poisons, exactly N(0, 1)
    per poison once the model no longer depends on the noise.
    """

    kind = "gaussian"
    poison_name = "mean GUS"
    checks = ("gaussian_leakage", "relearning_resistant", "not_mode_connected", "utility_preserved", "budget_respected")
    measures_forget_set = True

    def poison(self, ctx: BuildContext) -> PoisonedTrainingSet:
        a = ctx.recipe.attack
        train_x, poison = make_gaussian_poison(ctx.split.train_x, a["num_poisons"], a["sigma"], ctx.generator)
        return PoisonedTrainingSet(
            train_x, ctx.split.train_y.clone(), poison.indices, ctx.split.train_x, secret={"noise": poison.noise}
        )

    def validate(self, recipe, original, retrain, tensors):  # type: ignore[no-untyped-def]
        idx = tensors["forget_indices"]
        scores = gaussian_unlearning_scores(
            original, tensors["clean_train_x"][idx], tensors["train_y"][idx], tensors["secret.noise"]
        )
        z = unit_normal_mean_test(scores[~scores.isnan()].tolist(), alpha=0.01).z
        needed = recipe.options("gaussian_leakage").get("min_original_z", 5.0)
        return {"original_gus_z": z, "effective": bool(z >= needed), "rule": f"original GUS z >= {needed}"}

    def measure_poison(self, fixture, model, held_out=None, memo=no_memo):  # type: ignore[no-untyped-def]
        t = fixture.tensors
        idx, noise = fixture.forget_indices, t["secret.noise"]
        if held_out is not None:
            idx, noise = idx[held_out], noise[held_out]
        s = gaussian_unlearning_scores(model, t["clean_train_x"][idx], t["train_y"][idx], noise)
        test = unit_normal_mean_test(s[~s.isnan()].tolist(), alpha=0.01)
        return PoisonMeasurement(test.mean, test.stderr, test.n, "unit_normal")
