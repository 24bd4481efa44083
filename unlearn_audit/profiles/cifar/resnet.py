"""ResNet-18 for 32x32 inputs: the model of the `cifar10-resnet18` profile (the papers' setting).

Why a hand-written module rather than `torchvision.models.resnet18`: torchvision's ResNet-18 is
ImageNet-shaped (7x7 stride-2 stem and a max-pool, which shrink a 32x32 image to 8x8 before the
first block and cost several points of CIFAR-10 accuracy), and torchvision is an optional extra
that cannot even be imported beside every torch build, while the model must be importable
wherever a fixture is loaded. This is the standard CIFAR variant used by both papers' code bases
(Kuang Liu's pytorch-cifar layout): a 3x3 stride-1 stem without max-pool, BasicBlocks [2, 2, 2, 2]
with widths 64-128-256-512, global average pooling and one linear layer: 11.17 M parameters at
`width=64`. `width` scales every stage (the CPU stand-in uses a narrow one; same code path).

Inputs are images in [0, 1] (the library's convention, which the attacks rely on: trigger patches
of value 1.0, Gaussian noise in pixel units); the per-channel CIFAR-10 normalisation is the first
operation of the model, held in non-persistent buffers so that it is not part of the state dict
(it is a constant, not a weight an unlearner could change or interpolation should mix).
Modules are registered in forward order (stem, stages, head), which the reference unlearners'
"last k layers" selection relies on.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18, CIFAR variant (see the module docstring)."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        width: int = 64,
        mean: tuple[float, ...] = CIFAR10_MEAN,
        std: tuple[float, ...] = CIFAR10_STD,
    ) -> None:
        super().__init__()
        if len(mean) != in_channels or len(std) != in_channels:
            mean, std = (0.5,) * in_channels, (0.25,) * in_channels
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        widths = [width, 2 * width, 4 * width, 8 * width]
        stages = []
        c_in = width
        for i, c in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(c_in, c, stride), BasicBlock(c, c, 1)))
            c_in = c
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


def resnet18(input_shape: tuple[int, ...], num_classes: int, width: int = 64) -> nn.Module:
    """The `[model] architecture = "resnet18"` entry of a recipe (`width` 64 is the papers' model)."""
    if len(input_shape) != 3:
        raise ValueError(f"resnet18 needs image inputs (C, H, W), got shape {input_shape}")
    return ResNet18(in_channels=input_shape[0], num_classes=num_classes, width=int(width))
