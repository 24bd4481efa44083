"""Examples forwarded inside `torch.vmap` count as examples: one per lane of the map.

The harness counts a method's spend with a global forward hook that reads a module input's leading
dimension (`engine.counting`). Inside `torch.vmap` that dimension is hidden: a module sees one lane's
tensor, so per-example gradients of a batch of 128 (`vmap(grad(loss))`, the usual recipe for them)
counted as 1, or as 3 (the channels of an unbatched image), whatever the batch. The hook cannot ask
torch whether a tensor is batched without its private functorch API, so this module wraps the public
entry points instead (`torch.vmap`, `torch.func.vmap`, `functorch.vmap`): the wrapper reads the batch
size from the arguments and `in_dims` before torch hides it, and keeps it on a per-thread stack while
the mapped function runs, one chunk at a time where `chunk_size` splits the batch. `lanes()` is the
number of lanes each forward pass stands for (the product over nested maps), and None outside any map.

The rule the counter applies: inside a map, a module's forward pass counts one example per lane, whatever
the lane's own tensor looks like. That is exact for a map over examples (per-example gradients), and
counts a map over models that share one batch (an ensemble through `torch.func.stack_module_state`)
as one example per model. The wrapper is installed in the method's worker before its module is
imported, so `from torch.func import vmap` at the top of the method's module gets it. Code that reaches
functorch's private modules directly is not seen; that is a determined method, as in the trust model.
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
from collections.abc import Callable
from typing import Any

_local = threading.local()
_WRAPPED = "__unlearn_audit_counts_lanes__"


def _stack(name: str) -> list[Any]:
    stack = getattr(_local, name, None)
    if stack is None:
        stack = []
        setattr(_local, name, stack)
    return stack


def lanes() -> int | None:
    """How many examples a forward pass running now stands for: the product of the enclosing maps' lane
    counts; None when no counted map is running in this thread."""
    factors = _stack("factors")
    return math.prod(factors) if factors else None


def batch_size(in_dims: Any, args: tuple[Any, ...]) -> int | None:
    """The size of the mapped dimension: that of the first tensor `in_dims` maps; None if none can be found
    (vmap then raises its own error, or the structure is one this reader does not follow)."""
    import torch

    def size(dims: Any, value: Any) -> int | None:
        if dims is None:
            return None
        if isinstance(value, torch.Tensor):
            return int(value.shape[dims]) if isinstance(dims, int) and value.dim() > 0 else None
        if isinstance(value, (tuple, list)):
            parts = [dims] * len(value) if isinstance(dims, int) else list(dims)
            if len(parts) != len(value):
                return None
            return next((s for d, v in zip(parts, value) if (s := size(d, v)) is not None), None)
        if isinstance(value, dict):
            keyed = dict.fromkeys(value, dims) if isinstance(dims, int) else dims
            if not isinstance(keyed, dict):
                return None
            return next((s for k, v in value.items() if (s := size(keyed.get(k), v)) is not None), None)
        return None

    try:
        return size(in_dims if isinstance(in_dims, int) else tuple(in_dims), args)
    except (TypeError, IndexError, ValueError):
        return None


def chunk_sizes(size: int, chunk_size: int | None) -> list[int]:
    """The lane counts of the calls vmap makes of the mapped function: one call, or one per chunk."""
    if not chunk_size or chunk_size >= size:
        return [size]
    full, rest = divmod(size, chunk_size)
    return [chunk_size] * full + ([rest] if rest else [])


def counting(original: Callable[..., Any]) -> Callable[..., Any]:
    """`original` (a vmap), with its lanes counted; the same function if it counts them already."""
    if getattr(original, _WRAPPED, False):
        return original
    signature = inspect.signature(original)

    @functools.wraps(original)
    def vmap(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[..., Any]:
        bound = signature.bind(func, *args, **kwargs)
        in_dims = bound.arguments.get("in_dims", 0)
        chunk_size = bound.arguments.get("chunk_size")

        def lane(*a: Any, **k: Any) -> Any:
            pending = _stack("pending")
            known = bool(pending) and bool(pending[-1])
            if known:
                _stack("factors").append(pending[-1].pop(0))
            try:
                return func(*a, **k)
            finally:
                if known:
                    _stack("factors").pop()

        mapped = original(functools.wraps(func)(lane), *args, **kwargs)

        @functools.wraps(mapped)
        def run(*a: Any, **k: Any) -> Any:
            size = batch_size(in_dims, a)
            pending = _stack("pending")
            pending.append(chunk_sizes(size, chunk_size) if size else [])
            try:
                return mapped(*a, **k)
            finally:
                pending.pop()

        return run

    setattr(vmap, _WRAPPED, True)
    return vmap


def install() -> None:
    """Wrap torch's public vmaps so that their lanes count (idempotent; the results are unchanged)."""
    import torch
    import torch.func

    original = torch.func.vmap
    torch.func.vmap = counting(original)
    torch.vmap = torch.func.vmap if torch.vmap is original else counting(torch.vmap)
    try:
        import functorch  # the deprecated package, still shipped with torch
    except ImportError:
        return
    functorch.vmap = counting(functorch.vmap)


def installed() -> bool:
    """Whether `torch.func.vmap` still counts its lanes (a method may have put the original back)."""
    import torch.func

    return bool(getattr(torch.func.vmap, _WRAPPED, False)) and bool(getattr(torch.vmap, _WRAPPED, False))
