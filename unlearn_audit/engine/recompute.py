"""Activation checkpointing's recomputation is not a second example: it is not counted.

`torch.utils.checkpoint.checkpoint(fn, x)` runs `fn` again during the backward pass to rebuild the
activations it did not keep. The budget counter (`engine.counting`) sees every forward pass with
autograd on, so, with the recommended `use_reentrant=False`, the same examples counted twice: an honest
method that checkpoints to save memory was charged double. (With `use_reentrant=True` the first run
is under `no_grad` and only the recomputation counted, which was right.)

As with `engine.vmap_lanes`, the hook cannot ask torch whether a forward pass is a recomputation
without private API, so this module wraps the public entry point, `torch.utils.checkpoint.checkpoint`
(which `checkpoint_sequential` and libraries that look it up at call time go through): of the runs of
`fn` that one checkpoint call makes with autograd on, the first counts and later ones are marked as
recomputations, which the counter skips. Installed in the worker before the method's module is
imported. A function that does more when it runs again (training inside its recomputation) is not
counted for the extra: a determined method's way to hide compute, listed in the trust model.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

_local = threading.local()
_WRAPPED = "__unlearn_audit_skips_recomputation__"


def recomputing() -> bool:
    """Whether the forward passes running now in this thread rebuild activations for a backward pass."""
    return getattr(_local, "depth", 0) > 0


def counting_once(original: Callable[..., Any]) -> Callable[..., Any]:
    """`original` (a checkpoint), with the repeated runs of its function marked as recomputation."""
    if getattr(original, _WRAPPED, False):
        return original

    @functools.wraps(original)
    def checkpoint(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        import torch

        runs_with_grad = 0
        lock = threading.Lock()  # the backward pass may recompute on another thread

        @functools.wraps(function)
        def run(*a: Any, **k: Any) -> Any:
            nonlocal runs_with_grad
            with lock:
                again = torch.is_grad_enabled() and runs_with_grad > 0
                runs_with_grad += torch.is_grad_enabled()
            if not again:
                return function(*a, **k)
            _local.depth = getattr(_local, "depth", 0) + 1
            try:
                return function(*a, **k)
            finally:
                _local.depth -= 1

        return original(run, *args, **kwargs)

    setattr(checkpoint, _WRAPPED, True)
    return checkpoint


def install() -> None:
    """Wrap `torch.utils.checkpoint.checkpoint` so that its recomputations are not counted (idempotent)."""
    import torch.utils.checkpoint

    torch.utils.checkpoint.checkpoint = counting_once(torch.utils.checkpoint.checkpoint)


def installed() -> bool:
    import torch.utils.checkpoint

    return bool(getattr(torch.utils.checkpoint.checkpoint, _WRAPPED, False))
