"""Unit tests for the Witches' Brew attack (`unlearn_audit.attacks.witches_brew`) on tiny synthetic tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearn_audit.attacks.witches_brew import (
    WitchesBrewPoison,
    adversarial_margins,
    brew_for_targets,
    brew_poisons,
    gradient_matching_loss,
    make_witches_brew,
    runner_up_classes,
    select_low_margin_targets,
    select_random_targets,
)
from unlearn_audit.profiles.models import small_cnn
from unlearn_audit.training.fast import augment

N, SHAPE, CLASSES = 64, (1, 8, 8), 4
EPS = 16 / 255


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def surrogate(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return small_cnn(SHAPE, CLASSES, channels=[4, 8])


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand((N, *SHAPE), generator=gen(1)), torch.arange(N) % CLASSES


def brew_args(data, steps=30, restarts=1, seed=0, eps=EPS):
    x, y = data
    base = torch.nonzero(y == 2).flatten()[:6]
    return dict(
        surrogates=[surrogate(0), surrogate(1)],
        base_x=x[base],
        base_y=y[base],
        target_x=x[:1],
        adversarial_y=torch.tensor([2]),
        epsilon=eps,
        steps=steps,
        restarts=restarts,
        generator=gen(seed),
    )


def test_matching_loss_in_range_and_differentiable(data) -> None:
    x, y = data
    model = surrogate(0).eval()
    px = x[:8].clone().requires_grad_(True)
    loss = gradient_matching_loss(model, px, y[:8], x[8:9], torch.tensor([1]))
    assert 0 <= float(loss.detach()) <= 2
    (grad,) = torch.autograd.grad(loss, px)
    assert grad.abs().sum() > 0
    # Identical poison and target batches with the same labels: gradients coincide, loss 0.
    same = gradient_matching_loss(model, x[:4], y[:4], x[:4], y[:4])
    assert float(same.detach()) == pytest.approx(0, abs=1e-5)


def test_brewing_decreases_loss_and_respects_bounds(data) -> None:
    args = brew_args(data)
    poisoned, info = brew_poisons(**args)
    curve = info["loss_curve"]
    assert len(curve) == args["steps"] + 1
    assert all(0 <= v <= 2 for v in curve)
    assert curve[-1] < curve[0]
    delta = poisoned - args["base_x"]
    assert delta.abs().max() <= EPS + 1e-6
    assert poisoned.min() >= 0 and poisoned.max() <= 1 + 1e-6
    # Surrogates are left in their original (training) mode.
    assert all(m.training for m in args["surrogates"])


def test_deterministic_for_same_seed(data) -> None:
    a, info_a = brew_poisons(**brew_args(data, steps=5, seed=3))
    b, info_b = brew_poisons(**brew_args(data, steps=5, seed=3))
    c, _ = brew_poisons(**brew_args(data, steps=5, seed=4))
    assert torch.equal(a, b) and info_a["loss_curve"] == info_b["loss_curve"]
    assert not torch.equal(a, c)


def test_restarts_keep_best(data) -> None:
    _, info = brew_poisons(**brew_args(data, steps=5, restarts=3))
    losses = info["restart_losses"]
    assert len(losses) == 3
    assert info["best_restart"] == min(range(3), key=losses.__getitem__)
    assert info["final_loss"] == min(losses) == info["loss_curve"][-1]


@pytest.mark.parametrize("eps", [0.0, -0.1])
def test_bad_epsilon_raises(data, eps: float) -> None:
    with pytest.raises(ValueError, match="epsilon"):
        brew_poisons(**brew_args(data, eps=eps))


def test_select_low_margin_targets(data) -> None:
    x, y = data
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, CLASSES))
    idx = select_low_margin_targets(model, x, y, k=5)
    logits = model(x).detach()
    pred = logits.argmax(1)
    assert (pred[idx] == y[idx]).all()
    top2 = logits.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]  # for correct points, true logit minus best other
    assert torch.all(margin[idx][1:] >= margin[idx][:-1])
    correct = torch.nonzero(pred == y).flatten()
    assert margin[idx].max() <= margin[correct].sort().values[4] + 1e-6
    with pytest.raises(ValueError):
        select_low_margin_targets(model, x, y, k=N + 1)


def test_make_witches_brew(data) -> None:
    x, y = data
    poisoned, secret = make_witches_brew(
        x,
        y,
        [surrogate(0)],
        x[:1],
        torch.tensor([0]),
        adversarial_class=3,
        num_poisons=5,
        epsilon=EPS,
        steps=3,
        restarts=1,
        generator=gen(0),
    )
    assert isinstance(secret, WitchesBrewPoison)
    assert (y[secret.indices] == 3).all() and len(secret.indices) == 5
    assert torch.allclose(poisoned[secret.indices], x[secret.indices] + secret.delta)
    others = torch.ones(N, dtype=torch.bool)
    others[secret.indices] = False
    assert torch.equal(poisoned[others], x[others])
    assert secret.delta.abs().max() <= EPS + 1e-6
    assert secret.adversarial_class == 3 and secret.target_indices.tolist() == [0]
    with pytest.raises(ValueError):
        make_witches_brew(x, y, [surrogate(0)], x[:1], torch.tensor([0]), 3, 17, EPS, 3, 1, gen(0))


def test_adversarial_margins_sign_matches_prediction(data) -> None:
    x, _ = data
    model = surrogate(3).eval()
    adv = torch.arange(len(x)) % CLASSES
    margins = adversarial_margins(model, x, adv)
    with torch.no_grad():
        predicted = model(x).argmax(1)
    assert torch.equal(margins > 0, predicted == adv)
    assert margins.shape == (len(x),)


def test_runner_up_is_never_the_label(data) -> None:
    x, y = data
    runner_up = runner_up_classes(surrogate(4), x, y)
    assert not (runner_up == y).any()
    assert ((runner_up >= 0) & (runner_up < CLASSES)).all()


def test_brew_for_targets_disjoint_clean_label_within_epsilon(data) -> None:
    x, y = data
    targets = torch.tensor([0, 1, 5])
    adv = torch.tensor([2, 2, 3])
    poisoned, secret = brew_for_targets(
        x,
        y,
        [surrogate(0)],
        x[targets],
        targets,
        adv,
        poisons_per_target=4,
        epsilon=EPS,
        steps=5,
        restarts=1,
        generator=gen(0),
    )
    assert len(secret.indices) == 12 and len(torch.unique(secret.indices)) == 12  # disjoint sets
    assert torch.equal(secret.indices, secret.indices.sort().values)
    # each poison has its target's adversarial class as its (unchanged) label
    assert torch.equal(y[secret.indices], adv[secret.poison_target])
    changed = (poisoned != x).flatten(1).any(1)
    assert set(torch.nonzero(changed).flatten().tolist()) <= set(secret.indices.tolist())
    assert (poisoned - x).abs().max() <= EPS + 1e-6
    assert poisoned.min() >= 0 and poisoned.max() <= 1
    assert len(secret.final_losses) == 3


def test_brew_for_targets_reports_an_exhausted_class(data) -> None:
    x, y = data
    with pytest.raises(ValueError, match="unused training images of class 2"):
        brew_for_targets(
            x,
            y,
            [surrogate(0)],
            x[:2],
            torch.tensor([0, 1]),
            torch.tensor([2, 2]),
            poisons_per_target=10,
            epsilon=EPS,
            steps=1,
            restarts=1,
            generator=gen(0),
        )


def test_select_targets_with_several_models_requires_all_correct(data) -> None:
    x, y = data
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(nn.Sequential(nn.Flatten(), nn.Linear(64, CLASSES)))
    with torch.no_grad():
        right = [(m.eval()(x).argmax(1) == y) for m in models]
    both = int((right[0] & right[1]).sum())
    assert both > 0
    idx = select_low_margin_targets(models, x, y, k=both)
    assert all(bool(r[idx].all()) for r in right)
    with pytest.raises(ValueError, match="every model"):
        select_low_margin_targets(models, x, y, k=both + 1)


# -- the paper's threat model (cifar10-resnet18) ----------------------------------------------------
def test_select_random_targets_is_the_papers_threat_model() -> None:
    y = torch.arange(200) % 10
    idx, intended = select_random_targets(y, 40, 10, gen(0))
    assert len(idx) == 40 and len(torch.unique(idx)) == 40  # distinct test points
    assert not (intended == y[idx]).any() and ((intended >= 0) & (intended < 10)).all()
    assert len(torch.unique(y[idx])) >= 8 and len(torch.unique(intended)) >= 8  # classes are not fixed
    again = select_random_targets(y, 40, 10, gen(0))
    assert torch.equal(idx, again[0]) and torch.equal(intended, again[1])
    assert not torch.equal(idx, select_random_targets(y, 40, 10, gen(1))[0])
    with pytest.raises(ValueError, match="two classes"):
        select_random_targets(torch.zeros(5, dtype=torch.long), 1, 10, gen(0))


def test_the_victims_augmentation_is_differentiable_to_the_poison() -> None:
    """Crop (zero padding + gather) and flip are linear in the image, so the gradient of <A(x), w> must be
    A^T w exactly: <x, grad> = <A(x), w> for the same draws."""
    x = torch.rand((6, 3, 8, 8), generator=gen(2), requires_grad=True)
    w = torch.randn((6, 3, 8, 8), generator=gen(3))
    out = augment(x, "crop_flip", gen(4))
    (grad,) = torch.autograd.grad((out * w).sum(), x)
    assert grad.abs().sum() > 0
    assert float((x.detach() * grad).sum()) == pytest.approx(
        float((augment(x.detach(), "crop_flip", gen(4)) * w).sum()), rel=1e-5
    )


def test_brewing_through_crop_flip_is_seeded_bounded_and_changes_the_brew(data) -> None:
    a, info_a = brew_poisons(**brew_args(data, steps=8, seed=3), augmentation="crop_flip")
    b, info_b = brew_poisons(**brew_args(data, steps=8, seed=3), augmentation="crop_flip")
    plain, info_plain = brew_poisons(**brew_args(data, steps=8, seed=3))
    assert torch.equal(a, b) and info_a["loss_curve"] == info_b["loss_curve"]
    assert not torch.equal(a, plain)
    base = brew_args(data)["base_x"]
    assert (a - base).abs().max() <= EPS + 1e-6 and a.min() >= 0 and a.max() <= 1 + 1e-6
    # The curve's steps are taken on augmented poisons; the last value (which ranks restarts) on the plain ones.
    assert info_a["final_loss"] == info_a["loss_curve"][-1]
    with pytest.raises(ValueError, match="augmentation"):
        brew_poisons(**brew_args(data, steps=1), augmentation="mixup")


def test_no_augmentation_leaves_the_generator_stream_alone(data) -> None:
    """`tiny` brews without augmentation: the brew must draw exactly what it drew before the option existed."""
    g1, g2 = gen(5), gen(5)
    brew_poisons(**{**brew_args(data, steps=2), "generator": g1})
    brew_poisons(**{**brew_args(data, steps=2), "generator": g2}, augmentation="none")
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
    g3 = gen(5)
    brew_poisons(**{**brew_args(data, steps=2), "generator": g3}, augmentation="flip")
    assert not torch.equal(torch.rand(3, generator=gen(5)), torch.rand(3, generator=g3))


def test_fallback_to_low_margin_targets_only_for_failed_random_targets() -> None:
    from unlearn_audit.attacks.witches_brew import WitchesBrewAttack, per_fixture_minimum
    from unlearn_audit.scenarios.recipes import load_profile_recipes

    attack = WitchesBrewAttack()
    tiny = load_profile_recipes("tiny")["witches_brew"]
    cifar = load_profile_recipes("cifar10-resnet18")["witches_brew"]
    failed = {"effective": False, "validated_targets": 0, "targets": 1, "rule": "r"}
    assert attack.fallback(tiny, failed) is None  # tiny's low-margin targets have nothing to fall back to
    assert attack.fallback(cifar, {**failed, "effective": True}) is None
    retry, reason = attack.fallback(cifar, failed)
    assert retry.attack["targets"] == "low_margin" and "target_fallback" not in retry.attack
    assert {k: v for k, v in retry.attack.items() if k not in ("targets",)} == {
        k: v for k, v in cifar.attack.items() if k not in ("targets", "target_fallback")
    }
    assert "random targets failed validation" in reason and attack.fallback(retry, failed) is None
    # A fixture needs min(3, its targets) validated targets; the test needs 3 over the seeds it pools.
    assert per_fixture_minimum(tiny) == (3, 3) and per_fixture_minimum(cifar) == (1, 3)
