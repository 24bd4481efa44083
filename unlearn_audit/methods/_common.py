"""Helpers shared by the reference unlearners: budget accounting, randomness, layer selection.

Nothing here is part of the public API; the methods' behaviour is documented on each class.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from unlearn_audit.protocol import ExampleSet, UnlearningRequest

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


class Spend:
    """The method's own count of example-gradients, kept as the harness counts them.

    Every example forwarded with autograd enabled counts once (per forward pass); a method asks
    `fits(n)` before a pass and calls `add(n)` after it. Passes under `torch.no_grad()` are free.
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(0, int(limit))
        self.spent = 0

    @property
    def left(self) -> int:
        return self.limit - self.spent

    def fits(self, n: int) -> bool:
        return self.spent + n <= self.limit

    def add(self, n: int) -> None:
        self.spent += int(n)


def spawn_seed(request: UnlearningRequest) -> int:
    """A seed drawn from the request's generator (so that all randomness stems from it)."""
    return int(torch.randint(0, 2**62, (1,), generator=request.generator))


def device_generator(request: UnlearningRequest) -> torch.Generator:
    """A generator on the request's device, seeded from `request.generator` (CPU: that generator)."""
    device = torch.device(request.device)
    if device.type == "cpu":
        return request.generator
    return torch.Generator(device=device).manual_seed(spawn_seed(request))


def parameterised_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that hold parameters of their own, in registration (for sequential nets: forward) order."""
    return [(name, m) for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]


def last_layers(model: nn.Module, k: int) -> list[str]:
    """Names of the last `k` parameterised layers, counting normalisation layers with the layer before them.

    A "layer" is a module with parameters of its own (Linear, Conv, Embedding, ...). Normalisation
    layers (BatchNorm, LayerNorm, GroupNorm) are not counted in `k` but belong to the selected tail
    when they come after its first layer, so `k=1` on a conv net selects just the classifier head and
    `k=2` the last conv block (conv + BN) with the head. Order is module registration order, which
    is the forward order for `nn.Sequential` and for the usual torchvision-style models.
    """
    layers = parameterised_modules(model)
    if k <= 0:
        return []
    counted = [i for i, (_, m) in enumerate(layers) if not isinstance(m, NORM_LAYERS)]
    if not counted:
        return [name for name, _ in layers]
    start = counted[max(0, len(counted) - k)]
    return [name for name, _ in layers[start:]]


def sequential_split(model: nn.Module, trainable: list[str]) -> int | None:
    """If `model` is an `nn.Sequential` whose trainable modules all sit in `model[i:]` and none in
    `model[:i]`, return the largest such `i` (features of `model[:i]` can then be precomputed)."""
    if not isinstance(model, nn.Sequential) or not trainable:
        return None
    children = [name for name, _ in model.named_children()]
    first = min(children.index(name.split(".")[0]) for name in trainable)
    wanted = {id(p) for m in trainable_tail(model, trainable) for p in m.parameters(recurse=False)}
    in_tail = {id(p) for p in model[first:].parameters()}
    return first if in_tail == wanted else None


@torch.no_grad()
def features(module: nn.Module, data: ExampleSet, device: torch.device, batch_size: int = 1024) -> torch.Tensor:
    """`module` applied to every input of `data`, in eval mode and without autograd (no budget spent)."""
    was_training = module.training
    module.eval()
    out = [module(data.inputs[i : i + batch_size].to(device)) for i in range(0, len(data), batch_size)]
    module.train(was_training)
    return torch.cat(out) if out else torch.empty(0, device=device)


def epoch_batches(
    data: ExampleSet, batch_size: int, request: UnlearningRequest
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled mini-batches over `data`, epoch after epoch (nothing if `data` is empty)."""
    if len(data) == 0:
        return
    while True:
        yield from data.batches(batch_size, generator=request.generator, device=request.device)


def other_labels(labels: torch.Tensor, num_classes: int, request: UnlearningRequest) -> torch.Tensor:
    """A uniformly random label different from each given label (drawn from the request's generator)."""
    if num_classes < 2:
        return labels.clone()
    shift = torch.randint(1, num_classes, labels.shape, generator=request.generator).to(labels.device)
    return (labels + shift) % num_classes


def trainable_tail(model: nn.Module, names: list[str]) -> list[nn.Module]:
    modules = dict(model.named_modules())
    return [modules[n] for n in names]


def union_batches(
    request: UnlearningRequest,
    order: torch.Tensor,
    batch_size: int,
    *,
    relabel_forget: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches over forget + retain without copying either set.

    `order` holds indices into the union: `i < len(forget)` is forget example `i`, larger ones are
    retain example `i - len(forget)`. With `relabel_forget`, each forget example gets a random label
    other than its own (fresh draws on every call, from the request's generator).
    """
    forget, retain = request.forget, request.retain
    nf = len(forget)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        fi, ri = idx[idx < nf], idx[idx >= nf] - nf
        yf = forget.labels[fi]
        if relabel_forget:
            yf = other_labels(yf, request.num_classes, request)
        x = torch.cat([forget.inputs[fi], retain.inputs[ri]])
        y = torch.cat([yf, retain.labels[ri]])
        yield x.to(request.device), y.to(request.device)
