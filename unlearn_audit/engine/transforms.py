"""Whether a forward pass runs inside one of torch.func's transforms (`grad`, `vjp`, `jacrev`, ...).

The budget counter (`engine.counting`) counts inside `torch.compile`d code by adding to a tensor that the
compiled graph mutates. Inside a functorch transform that mutation is not allowed (Inductor failed with
"Cannot access storage of TensorWrapper" on a compiled `vmap(grad(loss))`), so there the counter counts
outside the graph instead, and Dynamo runs that part eagerly. Torch has no public way to ask whether a
transform is active, so this module wraps the public entry points in `torch.func` (and the deprecated
`functorch` package) to keep a per-thread depth while a transformed function runs. `torch.vmap` is
wrapped by `engine.vmap_lanes`, which knows its lanes. Results are unchanged.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

_local = threading.local()
_WRAPPED = "__unlearn_audit_marks_transform__"
TRANSFORMS = ("grad", "grad_and_value", "vjp", "jvp", "jacrev", "jacfwd", "hessian", "linearize")


def inside() -> bool:
    """Whether a function transformed by torch.func (other than vmap) is running now in this thread."""
    return getattr(_local, "depth", 0) > 0


def marking(original: Callable[..., Any]) -> Callable[..., Any]:
    """`original` (a transform, or a function that runs one), marking the thread while the transformed code runs."""
    if getattr(original, _WRAPPED, False):
        return original

    def entered(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def run(*a: Any, **k: Any) -> Any:
            _local.depth = getattr(_local, "depth", 0) + 1
            try:
                return function(*a, **k)
            finally:
                _local.depth -= 1

        return run

    @functools.wraps(original)
    def transform(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if original.__name__ in ("vjp", "jvp", "linearize"):  # these run `func` now, not when their result is called
            return entered(original)(func, *args, **kwargs)
        return entered(original(func, *args, **kwargs))

    setattr(transform, _WRAPPED, True)
    return transform


def install() -> None:
    """Wrap torch.func's transforms so that `inside()` knows when one runs (idempotent)."""
    import torch.func

    for name in TRANSFORMS:
        if hasattr(torch.func, name):
            setattr(torch.func, name, marking(getattr(torch.func, name)))
    try:
        import functorch
    except ImportError:
        return
    for name in TRANSFORMS:
        if hasattr(functorch, name):
            setattr(functorch, name, marking(getattr(functorch, name)))
