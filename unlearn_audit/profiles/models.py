"""Model architectures of the profiles, built from the recipe's `[model]` table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from unlearn_audit.profiles.registry import ARCHITECTURES


def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: list[int] | None = None) -> nn.Module:
    """A plain ReLU MLP: the `tiny` profile's model (1024-256-10 by default)."""
    width = 1
    for d in input_shape:
        width *= d
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden or [256]:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def small_cnn(input_shape: tuple[int, ...], num_classes: int, channels: list[int] | None = None) -> nn.Module:
    """A small batch-norm CNN (conv-BN-ReLU-pool blocks, then a linear head)."""
    c_in = input_shape[0]
    layers: list[nn.Module] = []
    for c in channels or [16, 32, 64]:
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


def model_factory(spec: dict[str, Any], input_shape: tuple[int, ...], num_classes: int) -> Callable[[], nn.Module]:
    """A zero-argument function that builds a freshly initialised model of the recipe's architecture.

    Initialisation draws from torch's global generator, so a caller that wants a reproducible
    initialisation seeds it first (the trainer does).
    """
    options = dict(spec)
    name = options.pop("architecture")
    build = ARCHITECTURES.get(name)

    def factory() -> nn.Module:
        return build(tuple(input_shape), num_classes, **options)

    factory.__qualname__ = factory.__name__ = f"model_factory[{name}]"
    return factory


def same_architecture(model: nn.Module, reference: nn.Module) -> str | None:
    """None if `model` has `reference`'s parameters and buffers (names and shapes), else why not."""
    if not isinstance(model, nn.Module):
        return f"expected a torch.nn.Module, got {type(model).__name__}"
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    if got == want:
        return None
    wrapper = _wrapping_prefix(got, want)
    if wrapper:
        return (
            f"returned model wraps the architecture (every name has the prefix {wrapper!r}, as torch.compile's "
            "or DataParallel's wrapper adds): return the module it wraps"
        )
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    reshaped = sorted(k for k in set(got) & set(want) if got[k] != want[k])
    parts = []
    if missing:
        parts.append(f"missing {missing[:5]}")
    if extra:
        parts.append(f"unexpected {extra[:5]}")
    if reshaped:
        parts.append("shape changed for " + ", ".join(f"{k} {want[k]}->{got[k]}" for k in reshaped[:5]))
    return "returned model has another architecture: " + "; ".join(parts)


def _wrapping_prefix(got: dict[str, tuple[int, ...]], want: dict[str, tuple[int, ...]]) -> str | None:
    """The prefix that turns each of `want`'s names into one of `got`'s, shapes equal; None if there is none."""
    some = next(iter(want), None)
    candidates = [name[: -len(some)] for name in got if some is not None and name.endswith("." + some)]
    for prefix in candidates:
        if {prefix + k: v for k, v in want.items()} == got:
            return prefix
    return None


def nonfinite_tensors(model: nn.Module) -> list[str]:
    """Names of parameters or buffers that hold NaN or Inf."""
    bad = []
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad.append(name)
    return bad
