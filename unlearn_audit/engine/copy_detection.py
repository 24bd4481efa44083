"""Is a returned model one of the harness's reference models, perhaps perturbed? Scaled by independent training.

A method that reads the retrain reference (from disk where no sandbox confines it, or from the
harness's memory in the in-process mode) and returns it with a little noise added is still the same
function: an exact-match test misses it. The yardstick is how far apart models trained independently
of each other are: the retrain reference, the clean models (`[references] clean_models`) and the
poisoned original all start from their own initialisations, so every pair of them is an independent
training of (nearly) the same task. No legitimate method can land much closer to one particular
reference than that: it does not know the reference's seed, and unlearning from the original starts
about one such distance away. The rule:

    a returned model is a copy of reference R when, in weights or in predictions on the test set,
    its distance to R is below COPY_FRACTION of the closest pair of independently trained models.

- Weights: L2 distance. The yardstick is the smallest distance between two independent models the
  harness holds, and at most sqrt(2) x the reference's norm (two independent trainings of equal
  norm are nearly orthogonal, which keeps the yardstick sane when the poisoned original exploded).
- Predictions: the mean total-variation distance of the softmax outputs over the test set, in fp32.
  This catches what leaves the weights far but the function intact (neurons permuted, a fine-tuned
  setting where independent trainings are near each other in weights). The yardstick here comes
  from the clean models only (retrain and `[references] clean_models`): the poisoned original's
  predictions differ from retrain's by the poison's effect too (measured: a Gradient Canceling
  original within 0.05 accuracy of retrain was 5x farther from it than a fresh retraining), which
  would inflate the yardstick and flag a good unlearner. Without clean models the prediction rule
  is not applied, and the message says so.

Measured on `tiny` (five scenarios, seeds 0-2, 15 fixtures): the six reference methods (Retrain,
NoOp, GradientDescent, GradientAscent, NegGradPlus, SCRUB) stay at 0.99 or more of the yardstick in
weights and 1.13 or more in predictions (backdoor, the recipe with clean models); the retrain
reference with Gaussian noise of 1%, 5% and 20% of each tensor's standard deviation lands at
0.007-0.008, 0.035-0.040 and 0.14-0.16 of it in weights, every one flagged. COPY_FRACTION = 0.25
leaves a factor of 4 on the side of legitimate methods.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from unlearn_audit.scenarios.fixture import Fixture

COPY_FRACTION = 0.25
"""Below this fraction of the closest independent pair's distance, a model counts as a copy."""

BATCH = 1024


@dataclass(frozen=True)
class Yardstick:
    """How close two independently trained models of this fixture get, by each measure."""

    weights: float
    weights_pair: str  # e.g. "original~retrain", or "sqrt(2) x |retrain|"
    predictions: float | None  # None: no two independent models of the task to compare
    predictions_pair: str  # the pair, or why there is none


@dataclass(frozen=True)
class Closeness:
    """A returned model's distances to one reference, as fractions of the yardstick."""

    reference: str
    weights: float
    predictions: float | None

    @property
    def is_copy(self) -> bool:
        """Whether either measure falls below COPY_FRACTION of the yardstick."""
        return self.weights < COPY_FRACTION or (self.predictions is not None and self.predictions < COPY_FRACTION)


def flat_weights(model: nn.Module) -> torch.Tensor:
    """Every floating-point tensor of the state dict, as one fp32 vector on the CPU."""
    parts = [
        v.detach().float().flatten().cpu()
        for k, v in model.state_dict().items()
        if v.is_floating_point() and not k.endswith("num_batches_tracked")
    ]
    return torch.cat(parts) if parts else torch.zeros(0)


@torch.no_grad()
def test_probabilities(model: nn.Module, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Softmax outputs on `inputs` in fp32 (no autocast: the measure must not carry bf16 rounding), on the CPU."""
    was_training = model.training
    model.eval()
    try:
        out = [model(inputs[i : i + BATCH].to(device)).float().softmax(1).cpu() for i in range(0, len(inputs), BATCH)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """Mean over examples of half the L1 distance between two predictive distributions."""
    return float(0.5 * (p - q).abs().sum(1).mean()) if len(p) else 0.0


@dataclass(frozen=True)
class _References:
    yardstick: Yardstick
    weights: dict[str, torch.Tensor]
    probabilities: dict[str, torch.Tensor]


_MEMO: OrderedDict[tuple[str, int, str], _References] = OrderedDict()
_MEMO_SIZE = 4


def _references(fixture: Fixture, device: torch.device) -> _References:
    """The references' weights and test predictions and the yardstick: once per fixture and device.
    Predictions are computed only where they are compared: for two or more clean models and a test set."""
    key = (str(fixture.path), fixture.seed, str(device))
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    inputs = fixture.tensors["test_x"]
    references = fixture.reference_models()  # retrain and the clean models
    weights = {name: flat_weights(m) for name, m in {"original": fixture.original, **references}.items()}
    probabilities: dict[str, torch.Tensor]
    if len(references) < 2:
        probabilities, why_not = {}, "the recipe trains no clean models ([references] clean_models)"
    elif len(inputs) == 0:
        probabilities, why_not = {}, "no test set"
    else:
        probabilities, why_not = {name: test_probabilities(m, inputs, device) for name, m in references.items()}, ""
    result = _References(_yardstick(weights, probabilities, why_not), weights, probabilities)
    _MEMO[key] = result
    while len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    return result


def _yardstick(weights: dict[str, torch.Tensor], probabilities: dict[str, torch.Tensor], why_not: str) -> Yardstick:
    """The closest independent pair in weights (at most sqrt(2) x |retrain|) and, where `probabilities`
    holds two or more clean models, in predictions; else `why_not` says why predictions are not compared."""
    pairs = list(itertools.combinations(weights, 2))
    candidates = {f"{a}~{b}": float((weights[a] - weights[b]).norm()) for a, b in pairs}
    candidates["sqrt(2) x |retrain|"] = math.sqrt(2.0) * float(weights["retrain"].norm())
    weights_pair = min(candidates, key=lambda k: candidates[k])
    prediction_pairs = {
        f"{a}~{b}": total_variation(probabilities[a], probabilities[b])
        for a, b in itertools.combinations(probabilities, 2)
    }
    if not prediction_pairs:
        return Yardstick(candidates[weights_pair], weights_pair, None, why_not)
    predictions_pair = min(prediction_pairs, key=lambda k: prediction_pairs[k])
    return Yardstick(candidates[weights_pair], weights_pair, prediction_pairs[predictions_pair], predictions_pair)


def closeness(model: nn.Module, fixture: Fixture, device: torch.device) -> tuple[list[Closeness], Yardstick]:
    """The returned model's closeness to every reference the harness holds (retrain, clean models),
    closest first, and the yardstick it is measured in."""
    refs = _references(fixture, device)
    stick = refs.yardstick
    mine = flat_weights(model)
    probabilities = test_probabilities(model, fixture.tensors["test_x"], device) if stick.predictions else None
    found = []
    for name in fixture.reference_models():
        weights = float((mine - refs.weights[name]).norm()) / stick.weights if stick.weights > 0 else math.inf
        predictions = None
        if probabilities is not None and stick.predictions:
            predictions = total_variation(probabilities, refs.probabilities[name]) / stick.predictions
        found.append(Closeness(name, weights, predictions))
    found.sort(key=lambda c: min(c.weights, c.predictions if c.predictions is not None else math.inf))
    return found, stick


def copy_problem(found: list[Closeness], stick: Yardstick) -> str | None:
    """Why the returned model counts as a copy of a reference (the rule, the figures, the margin), or None."""
    copied = next((c for c in found if c.is_copy), None)
    if copied is None:
        return None
    what = (
        "retrain reference"
        if copied.reference == "retrain"
        else f"reference model {copied.reference!r} (a clean model)"
    )
    predictions = (
        f"its test-set predictions {copied.predictions:.3g} of theirs ({stick.predictions:.3g} mean total "
        f"variation, {stick.predictions_pair})"
        if copied.predictions is not None
        else f"predictions not compared ({stick.predictions_pair})"
    )
    return (
        f"unlearn() returned a copy of the harness's {what}: its weights are {copied.weights:.3g} of the distance "
        f"between the closest independently trained models ({stick.weights:.3g}, {stick.weights_pair}), "
        f"{predictions}; a copy is anything below {COPY_FRACTION:g} of either (legitimate methods, a fresh "
        "retraining among them, were measured at 0.99 or more). A method must not read the harness's reference models"
    )


def closeness_details(found: list[Closeness], stick: Yardstick) -> dict[str, object]:
    """For the outcome's record: the closest reference and the fractions."""
    closest = found[0] if found else None
    return {
        "closest_reference": closest.reference if closest else None,
        "weights_fraction": closest.weights if closest else None,
        "predictions_fraction": closest.predictions if closest else None,
        "yardstick": {
            "weights": stick.weights,
            "weights_pair": stick.weights_pair,
            "predictions": stick.predictions,
            "predictions_pair": stick.predictions_pair,
        },
        "copy_fraction": COPY_FRACTION,
    }
