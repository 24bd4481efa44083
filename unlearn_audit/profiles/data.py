"""Data sets of the profiles, generated offline from what installed packages ship.

The `tiny` profile uses scikit-learn's 8x8 digits (1,797 images, shipped with the package),
scaled to [0, 1] and upsampled to 32x32 so that inputs have CIFAR-like dimensionality
(1,024 pixels) for the Gaussian poisons, while a model still trains in seconds on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unlearn_audit.profiles.registry import DATASETS
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


def load_split(source: str, **options: object) -> Split:
    """Load the data set named in a recipe's `[data] source` (built in or registered, `profiles.registry`)."""
    return DATASETS.get(source)(**options)  # type: ignore[no-any-return]
