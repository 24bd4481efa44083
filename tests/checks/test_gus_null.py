"""The Gaussian Unlearning Score's null distribution: against fresh noise it is exactly N(0, 1).

`gaussian_unlearning_scores` claims that s_i = -<g_i, xi_i> / ||g_i|| is N(0, 1) whenever the
model does not depend on xi_i, whatever the model. We check that on a briefly trained digits
MLP and fresh noise, and run a positive control: a model trained on x + 0.3 xi scores clearly
positive against its secret noise, but not against fresh noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from scipy import stats as st
from torch import nn

from unlearn_audit.attacks.gaussian import make_gaussian_poison
from unlearn_audit.metrics import gaussian_unlearning_scores
from unlearn_audit.profiles.data import Split, load_digits_split
from unlearn_audit.profiles.models import mlp
from unlearn_audit.protocol import ExampleSet, TrainingRecipe
from unlearn_audit.training.loops import seeded_model, train

NUM_POISONS, SIGMA = 150, 0.3
# The positive control's model. 10 epochs are enough for a strong signal (z is about 10 on
# every seed tried, against the threshold of 3) and keep the file fast on a 2-core CPU.
POISON_EPOCHS = 10


def z_of(scores: torch.Tensor) -> float:
    s = scores[~scores.isnan()]
    return float(s.mean()) * math.sqrt(len(s))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Small matmuls: one thread is faster and immune to oversubscription on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def split() -> Split:
    return load_digits_split()


def factory() -> nn.Module:
    return mlp((1, 32, 32), 10)


@pytest.fixture(scope="module")
def clean_model(split: Split) -> nn.Module:
    model = seeded_model(factory, 0)
    train(
        model,
        ExampleSet(split.train_x, split.train_y),
        TrainingRecipe(epochs=3),
        generator=torch.Generator().manual_seed(0),
    )
    return model


@pytest.fixture(scope="module")
def poisoned(split: Split):
    x, secret = make_gaussian_poison(split.train_x, NUM_POISONS, SIGMA, torch.Generator().manual_seed(1))
    model = seeded_model(factory, 1)
    train(
        model,
        ExampleSet(x, split.train_y),
        TrainingRecipe(epochs=POISON_EPOCHS),
        generator=torch.Generator().manual_seed(1),
    )
    return model, secret


def test_trained_model_is_a_real_model(clean_model: nn.Module, split: Split) -> None:
    """Guard: the null test below is about a trained model, not a random one."""
    from unlearn_audit.metrics import correct

    assert correct(clean_model, split.test_x, split.test_y).float().mean().item() > 0.8


def test_gus_against_fresh_noise_is_standard_normal(clean_model: nn.Module, split: Split) -> None:
    x, y = split.train_x[:1000], split.train_y[:1000]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2024))
    scores = gaussian_unlearning_scores(clean_model, x, y, noise)
    assert scores.shape == (1000,) and scores.dtype == torch.float64
    assert int(scores.isnan().sum()) == 0
    n = len(scores)
    ks = st.kstest(scores.numpy(), "norm")
    assert ks.pvalue > 1e-3, ks
    assert abs(float(scores.mean())) < 4 / math.sqrt(n)
    assert abs(float(scores.std()) - 1.0) < 0.1


def test_gus_null_holds_for_an_untrained_model(split: Split) -> None:
    """'Whatever the model': the null does not rely on training either."""
    model = seeded_model(factory, 5)
    x, y = split.test_x, split.test_y
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    scores = gaussian_unlearning_scores(model, x, y, noise)
    assert st.kstest(scores.numpy(), "norm").pvalue > 1e-3
    assert abs(z_of(scores)) < 4


def test_gus_detects_the_secret_noise(poisoned, split: Split) -> None:
    model, secret = poisoned
    idx = secret.indices
    scores = gaussian_unlearning_scores(model, split.train_x[idx], split.train_y[idx], secret.noise)
    assert int(scores.isnan().sum()) == 0
    assert z_of(scores) > 3


def test_gus_of_poisoned_model_against_fresh_noise_is_null(poisoned, split: Split) -> None:
    model, secret = poisoned
    idx = secret.indices
    fresh = torch.randn(secret.noise.shape, generator=torch.Generator().manual_seed(11))
    scores = gaussian_unlearning_scores(model, split.train_x[idx], split.train_y[idx], fresh)
    assert abs(z_of(scores)) < 4


def test_gus_on_unpoisoned_samples_is_null(poisoned, split: Split) -> None:
    """The secret noise of the poisons says nothing about *other* clean samples."""
    model, secret = poisoned
    others = torch.ones(len(split.train_x), dtype=torch.bool)
    others[secret.indices] = False
    idx = torch.nonzero(others).flatten()[:NUM_POISONS]
    scores = gaussian_unlearning_scores(model, split.train_x[idx], split.train_y[idx], secret.noise)
    assert abs(z_of(scores)) < 4


# --------------------------------------------------------------------------- mechanics


def test_score_formula_and_batching(clean_model: nn.Module, split: Split) -> None:
    x, y = split.test_x[:37], split.test_y[:37]
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    scores = gaussian_unlearning_scores(clean_model, x, y, noise)

    xg = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(clean_model(xg), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, xg)
    g = g.flatten(1).double()
    expected = -(g * noise.flatten(1).double()).sum(1) / g.norm(dim=1)
    # (float32 gradients: batched and unbatched matmuls may differ in the last bits.)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)

    # Batch size does not change the per-sample scores.
    torch.testing.assert_close(
        gaussian_unlearning_scores(clean_model, x, y, noise, batch_size=5), scores, rtol=1e-5, atol=1e-5
    )
    # Parameters and their .grad are left as they were (train() leaves the last step's grads).
    params = [p.detach().clone() for p in clean_model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in clean_model.parameters()]
    gaussian_unlearning_scores(clean_model, x, y, noise)
    for p, before, grad in zip(clean_model.parameters(), params, grads):
        assert torch.equal(p, before)
        assert (p.grad is None and grad is None) or torch.equal(p.grad, grad)


def test_empty_input_gives_empty_scores(clean_model: nn.Module) -> None:
    out = gaussian_unlearning_scores(
        clean_model, torch.empty(0, 1, 32, 32), torch.empty(0, dtype=torch.long), torch.empty(0, 1, 32, 32)
    )
    assert out.shape == (0,) and out.dtype == torch.float64


def test_zero_gradient_gives_nan() -> None:
    """A model whose output does not depend on the input has zero input gradient: NaN, not 0 or inf."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(1024, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    x = torch.rand(12, 1, 32, 32)
    y = torch.arange(12) % 10
    noise = torch.randn(12, 1, 32, 32)
    scores = gaussian_unlearning_scores(model, x, y, noise)
    assert scores.shape == (12,)
    assert bool(scores.isnan().all())


def test_zero_gradient_nan_only_where_gradient_vanishes() -> None:
    """Mixed batch: samples behind a dead ReLU get NaN, the others a finite score."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 1), nn.ReLU(), nn.Linear(1, 3))
    with torch.no_grad():
        model[1].weight.fill_(1.0)
        model[1].bias.fill_(-8.0)  # active iff the pixel sum exceeds 8
        model[3].weight.copy_(torch.tensor([[1.0], [-1.0], [0.5]]))
        model[3].bias.zero_()
    x = torch.zeros(6, 1, 4, 4)
    x[:3] = 1.0  # sum 16: active
    x[3:] = 0.1  # sum 1.6: dead ReLU, zero input gradient
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    noise = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    scores = gaussian_unlearning_scores(model, x, y, noise, batch_size=4)
    assert bool(torch.isfinite(scores[:3]).all())
    assert bool(scores[3:].isnan().all())
