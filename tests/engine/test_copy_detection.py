"""Copy detection scaled by independent training (`engine.copy_detection`), on the real `tiny` fixtures.

A reference with noise added, or with its hidden units permuted, is flagged; a fresh retraining, the
poisoned original and an unlearning from it are not. The figures asserted keep wide margins from the
rule's threshold (measured: legitimate models at 0.99 or more, noisy copies at 0.04 or less).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from unlearn_audit.engine.copy_detection import COPY_FRACTION, closeness, copy_problem
from unlearn_audit.engine.runner import run_unlearner
from unlearn_audit.methods import GradientDescent, Retrain

CPU = torch.device("cpu")


def noisy(model: nn.Module, fraction: float, seed: int = 1) -> nn.Module:
    """`model` with Gaussian noise of `fraction` of each tensor's standard deviation added."""
    generator = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(model)
    with torch.no_grad():
        for tensor in out.state_dict().values():
            if tensor.is_floating_point() and tensor.numel() > 1:
                tensor.add_(torch.randn(tensor.shape, generator=generator) * fraction * tensor.std())
    return out


def permuted(model: nn.Module) -> nn.Module:
    """The same function with the MLP's hidden units in another order: far in weights, identical in predictions."""
    out = copy.deepcopy(model)
    first, last = [m for m in out.modules() if isinstance(m, nn.Linear)]
    order = torch.randperm(first.out_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first.weight.copy_(first.weight[order])
        first.bias.copy_(first.bias[order])
        last.weight.copy_(last.weight[:, order])
    return out


@pytest.mark.parametrize("scenario", ["gaussian", "backdoor"])
@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.05, 0.2])
def test_a_perturbed_reference_is_a_copy(fixtures: dict, scenario: str, fraction: float) -> None:
    fixture = fixtures[scenario]
    found, yardstick = closeness(noisy(fixture.retrain, fraction), fixture, CPU)
    assert found[0].reference == "retrain" and found[0].weights < COPY_FRACTION * 0.7
    problem = copy_problem(found, yardstick)
    assert problem is not None and "copy of the harness's retrain reference" in problem
    assert f"below {COPY_FRACTION:g}" in problem and yardstick.weights_pair in problem


def test_a_perturbed_clean_model_is_a_copy_too(fixtures: dict) -> None:
    fixture = fixtures["backdoor"]
    found, yardstick = closeness(noisy(fixture.clean_models[3], 0.05), fixture, CPU)
    assert found[0].reference == "clean4"
    assert "reference model 'clean4' (a clean model)" in (copy_problem(found, yardstick) or "")


def test_permuted_hidden_units_are_caught_by_the_predictions(fixtures: dict) -> None:
    """Backdoor's recipe trains clean models, so predictions are compared: a permutation cannot hide."""
    fixture = fixtures["backdoor"]
    found, yardstick = closeness(permuted(fixture.retrain), fixture, CPU)
    retrain = next(c for c in found if c.reference == "retrain")
    assert retrain.weights > 0.5  # far in weights ...
    assert retrain.predictions is not None and retrain.predictions < 0.01  # ... the same function
    assert copy_problem(found, yardstick) is not None


def test_without_clean_models_predictions_are_not_compared_and_the_message_says_so(fixtures: dict) -> None:
    fixture = fixtures["gaussian"]
    found, yardstick = closeness(noisy(fixture.retrain, 0.05), fixture, CPU)
    assert yardstick.predictions is None and found[0].predictions is None
    assert "predictions not compared (the recipe trains no clean models" in (copy_problem(found, yardstick) or "")


@pytest.mark.parametrize("scenario", ["gaussian", "backdoor"])
def test_the_original_a_fresh_retraining_and_an_unlearning_are_not_copies(fixtures: dict, scenario: str) -> None:
    fixture = fixtures[scenario]
    legitimate = {"original": fixture.original}
    for method, fraction in ((Retrain(), 10.0), (GradientDescent(), 0.05)):
        outcome = run_unlearner(
            method, fixture, budget_fraction=fraction, seed=0, timeout=600, device=CPU, exempt_from_budget=True
        )
        assert outcome.error is None and outcome.model is not None, outcome.error
        closest = outcome.details["reference_closeness"]
        assert closest["weights_fraction"] > 3 * COPY_FRACTION
        legitimate[type(method).__name__] = outcome.model
    for name, model in legitimate.items():
        found, yardstick = closeness(model, fixture, CPU)
        assert copy_problem(found, yardstick) is None, name
        assert min(c.weights for c in found) > 3 * COPY_FRACTION, name
        predictions = [c.predictions for c in found if c.predictions is not None]
        assert all(p > 3 * COPY_FRACTION for p in predictions), name
