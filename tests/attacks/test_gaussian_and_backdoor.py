"""Unit tests for the poisoning attacks (`unlearn_audit.attacks`) on small synthetic tensors."""

from __future__ import annotations

import pytest
import torch

from unlearn_audit.attacks.backdoor import TriggerBackdoor, apply_trigger, make_backdoor
from unlearn_audit.attacks.gaussian import GaussianPoison, make_gaussian_poison

N, SHAPE = 200, (1, 32, 32)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand((N, *SHAPE), generator=gen(123))


@pytest.fixture
def labels() -> torch.Tensor:
    return torch.arange(N) % 10  # 20 samples of each class 0..9


# --------------------------------------------------------------------------- Gaussian poison


def test_gaussian_poison_changes_only_chosen_indices(images: torch.Tensor) -> None:
    original = images.clone()
    poisoned, secret = make_gaussian_poison(images, 50, 0.3, gen(0))
    assert isinstance(secret, GaussianPoison)
    assert torch.equal(images, original), "the input must not be modified in place"
    assert poisoned.shape == images.shape and poisoned.dtype == images.dtype

    idx = secret.indices
    assert idx.dtype == torch.long and idx.shape == (50,)
    assert len(torch.unique(idx)) == 50
    assert int(idx.min()) >= 0 and int(idx.max()) < N
    assert torch.equal(idx, idx.sort().values), "indices are sorted so that noise rows line up with them"

    untouched = torch.ones(N, dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(poisoned[untouched], images[untouched])
    # Every chosen sample actually changed (noise is never all-zero).
    changed = (poisoned[idx] != images[idx]).flatten(1).any(1)
    assert bool(changed.all())


def test_gaussian_poison_is_clean_plus_sigma_noise(images: torch.Tensor) -> None:
    sigma = 0.3
    poisoned, secret = make_gaussian_poison(images, 40, sigma, gen(1))
    assert secret.sigma == sigma and isinstance(secret.sigma, float)
    assert secret.noise.shape == (40, *SHAPE)
    expected = images[secret.indices] + sigma * secret.noise
    assert torch.equal(poisoned[secret.indices], expected)
    # Inputs are not clipped: some poisoned pixels leave [0, 1].
    assert bool((poisoned[secret.indices] < 0).any()) and bool((poisoned[secret.indices] > 1).any())


def test_gaussian_poison_noise_is_standard_normal(images: torch.Tensor) -> None:
    _, secret = make_gaussian_poison(images, 100, 0.5, gen(2))
    noise = secret.noise.double()
    # 102,400 entries: se of the mean 0.003, of the std about 0.0022.
    assert abs(noise.mean().item()) < 0.02
    assert abs(noise.std().item() - 1.0) < 0.02
    # Not just any unit-variance noise: no sample is a copy of another.
    assert not torch.equal(secret.noise[0], secret.noise[1])


def test_gaussian_poison_deterministic_for_seed(images: torch.Tensor) -> None:
    p1, s1 = make_gaussian_poison(images, 30, 0.3, gen(7))
    p2, s2 = make_gaussian_poison(images, 30, 0.3, gen(7))
    assert torch.equal(p1, p2)
    assert torch.equal(s1.indices, s2.indices)
    assert torch.equal(s1.noise, s2.noise)

    p3, s3 = make_gaussian_poison(images, 30, 0.3, gen(8))
    assert not torch.equal(s1.noise, s3.noise)
    assert not torch.equal(s1.indices, s3.indices)
    assert not torch.equal(p1, p3)


def test_gaussian_poison_all_samples(images: torch.Tensor) -> None:
    poisoned, secret = make_gaussian_poison(images, N, 0.1, gen(3))
    assert torch.equal(secret.indices, torch.arange(N))
    assert torch.equal(poisoned, images + 0.1 * secret.noise)


@pytest.mark.parametrize("k", [0, -1, N + 1])
def test_gaussian_poison_bad_count(images: torch.Tensor, k: int) -> None:
    with pytest.raises(ValueError, match="num_poisons"):
        make_gaussian_poison(images, k, 0.3, gen(0))


# --------------------------------------------------------------------------- backdoor


def test_backdoor_poisons_non_target_classes(images: torch.Tensor, labels: torch.Tensor) -> None:
    target = 3
    x0, y0 = images.clone(), labels.clone()
    x, y, secret = make_backdoor(images, labels, 25, target, 4, 1.0, gen(0))
    assert isinstance(secret, TriggerBackdoor)
    assert torch.equal(images, x0) and torch.equal(labels, y0), "inputs must not be modified in place"

    idx = secret.indices
    assert idx.dtype == torch.long and idx.shape == (25,)
    assert len(torch.unique(idx)) == 25
    assert torch.equal(idx, idx.sort().values)
    assert bool((labels[idx] != target).all()), "poisons come only from non-target classes"
    assert bool((y[idx] == target).all()), "poisons are relabelled to the target class"
    assert torch.equal(secret.original_labels, labels[idx])
    assert secret.target_class == target and isinstance(secret.target_class, int)
    assert secret.patch_size == 4 and secret.patch_value == 1.0


def test_backdoor_patch_and_rest_of_image(images: torch.Tensor, labels: torch.Tensor) -> None:
    ps, value = 5, 0.75
    x, y, secret = make_backdoor(images, labels, 30, 0, ps, value, gen(1))
    idx = secret.indices
    patched = x[idx]
    assert bool((patched[..., -ps:, -ps:] == value).all())

    mask = torch.ones(SHAPE, dtype=torch.bool)
    mask[..., -ps:, -ps:] = False
    assert int(mask.sum()) == 32 * 32 - ps * ps
    assert torch.equal(patched[:, mask], images[idx][:, mask]), "pixels outside the patch are unchanged"


def test_backdoor_leaves_other_samples_untouched(images: torch.Tensor, labels: torch.Tensor) -> None:
    x, y, secret = make_backdoor(images, labels, 40, 9, 3, 1.0, gen(2))
    rest = torch.ones(N, dtype=torch.bool)
    rest[secret.indices] = False
    assert int(rest.sum()) == N - 40
    assert torch.equal(x[rest], images[rest])
    assert torch.equal(y[rest], labels[rest])
    # Target-class samples keep the target label; the number of target labels grows by k.
    assert int((y == 9).sum()) == int((labels == 9).sum()) + 40


def test_backdoor_deterministic_for_seed(images: torch.Tensor, labels: torch.Tensor) -> None:
    a = make_backdoor(images, labels, 20, 1, 3, 1.0, gen(5))
    b = make_backdoor(images, labels, 20, 1, 3, 1.0, gen(5))
    c = make_backdoor(images, labels, 20, 1, 3, 1.0, gen(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(a[2].indices, b[2].indices)
    assert not torch.equal(a[2].indices, c[2].indices)


def test_backdoor_may_use_every_non_target_sample(images: torch.Tensor, labels: torch.Tensor) -> None:
    x, y, secret = make_backdoor(images, labels, N - 20, 4, 2, 0.0, gen(0))
    assert torch.equal(secret.indices, torch.nonzero(labels != 4).flatten())
    assert bool((y == 4).all())


@pytest.mark.parametrize("k", [0, -3, N - 20 + 1])
def test_backdoor_bad_count(images: torch.Tensor, labels: torch.Tensor, k: int) -> None:
    with pytest.raises(ValueError, match="num_poisons"):
        make_backdoor(images, labels, k, 4, 2, 1.0, gen(0))


def test_backdoor_no_candidates(images: torch.Tensor) -> None:
    all_target = torch.full((N,), 2, dtype=torch.long)
    with pytest.raises(ValueError, match="num_poisons"):
        make_backdoor(images, all_target, 1, 2, 2, 1.0, gen(0))


# --------------------------------------------------------------------------- trigger


def test_apply_trigger_does_not_modify_input(images: torch.Tensor) -> None:
    before = images.clone()
    out = apply_trigger(images, 4, 1.0)
    assert torch.equal(images, before)
    assert out.data_ptr() != images.data_ptr()
    assert bool((out[..., -4:, -4:] == 1.0).all())
    assert torch.equal(out[..., :-4, :], images[..., :-4, :])
    assert torch.equal(out[..., :, :-4], images[..., :, :-4])


def test_apply_trigger_bottom_right_corner() -> None:
    x = torch.zeros(2, 3, 6, 6)
    out = apply_trigger(x, 2, 0.5)
    expected = torch.zeros(2, 3, 6, 6)
    expected[:, :, 4:, 4:] = 0.5
    assert torch.equal(out, expected)
    # Works on a single C x H x W image too.
    single = apply_trigger(torch.zeros(3, 6, 6), 2, 0.5)
    assert torch.equal(single, expected[0])
