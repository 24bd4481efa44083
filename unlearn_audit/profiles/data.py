"""Data sets of the profiles, generated offline from what installed packages ship.

The `tiny` profile uses scikit-learn's 8x8 digits (1,797 images, shipped with the package),
scaled to [0, 1] and upsampled to 32x32 so that inputs have CIFAR-like dimensionality
(1,024 pixels) for the Gaussian poisons, while a model still trains in seconds on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unlearn_audit.profiles.registry import DATASETS_GROUP, load_registered
from unlearn_audit.profiles.split import Split


def load_digits_split(image_size: int = 32, test_fraction: float = 0.2, split_seed: int = 0) -> Split:
    """scikit-learn digits, upsampled to `image_size`, split by a seeded stratified shuffle."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    images = images.unsqueeze(1)
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = images.clamp_(0.0, 1.0).contiguous()
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=test_fraction,
        random_state=split_seed,
        stratify=labels.numpy(),
    )
    train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    return Split(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], 10)


def _cifar10(**options: object) -> Split:
    """CIFAR-10 (profile `cifar10-resnet18`); see `unlearn_audit.profiles.cifar.data` (imported lazily)."""
    from unlearn_audit.profiles.cifar.data import load_cifar10_split

    return load_cifar10_split(**options)  # type: ignore[arg-type]


def _synthetic_cifar(**options: object) -> Split:
    """The CPU stand-in for CIFAR-10 (profile `cifar10-resnet18-standin`); see `unlearn_audit.profiles.cifar.data`."""
    from unlearn_audit.profiles.cifar.data import synthetic_cifar_split

    return synthetic_cifar_split(**options)


def _synthetic_sentiment(**options: object) -> Split:
    from unlearn_audit.profiles.text.data import load_synthetic_sentiment  # the text profiles' loaders live with the text code

    return load_synthetic_sentiment(**options)  # type: ignore[arg-type]


def _imdb(**options: object) -> Split:
    from unlearn_audit.profiles.text.data import load_imdb

    return load_imdb(**options)  # type: ignore[arg-type]


DATASETS = {
    "digits": load_digits_split,
    "cifar10": _cifar10,  # `cifar10-resnet18` profile
    "synthetic_cifar": _synthetic_cifar,  # its CPU stand-in
    "synthetic_sentiment": _synthetic_sentiment,  # `text` profile: token ids N x L (long)
    "imdb": _imdb,  # `text-gpt2-imdb` profile
}


def load_split(source: str, **options: object) -> Split:
    """Load the data set named in a recipe."""
    loader = load_registered(DATASETS_GROUP, source, DATASETS, "data source")
    return loader(**options)  # type: ignore[arg-type]
