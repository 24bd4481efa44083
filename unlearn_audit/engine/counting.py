"""The harness's own count of example-gradients, and the proof that it kept counting.

A global forward pre-hook (`torch.nn.modules.module.register_module_forward_pre_hook`) sees every
forward pass of every module in the process, including models the method builds itself, deep
copies, and models whose per-module hooks the method cleared. Each module that holds parameters
counts the examples forwarded with autograd enabled; the spend is the maximum over modules, so a
method that trains only part of a network (a head on precomputed features) is counted as well.

A method can still remove the global hook or replace `nn.Module.__call__`. It cannot do so
silently: `verify()` checks after `unlearn()` that the hook is still registered and that a canary
forward pass is still counted; a failed verification fails `budget_respected` ("the spend could
not be verified").
"""

from __future__ import annotations

import time
import weakref
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as module_internals


class UnlearnerCancelled(RuntimeError):
    """Raised inside the method's forward passes once its time is up (in-process mode)."""


class ExampleGradientCounter:
    """Counts examples forwarded with autograd on, per parameterised module; the max is the spend.

    Use as a context manager (or `install()` / `uninstall()`): only forward passes while it is
    installed count. `deadline` (a `time.monotonic()` value) makes forward passes after it raise
    `UnlearnerCancelled`, which is how the in-process mode stops a method that runs too long.
    """

    def __init__(self, deadline: float = float("inf")) -> None:
        self.deadline = deadline
        self.cancelled = False
        self.total = 0
        self._per_module: weakref.WeakKeyDictionary[nn.Module, int] = weakref.WeakKeyDictionary()
        self._handle: Any = None
        self._hook_key: int | None = None

    def _hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self.cancelled:
            raise UnlearnerCancelled("unlearner exceeded its time limit")
        if time.monotonic() > self.deadline:
            self.cancelled = True
            raise UnlearnerCancelled("unlearner exceeded its time limit")
        if not torch.is_grad_enabled() or not args or not isinstance(args[0], torch.Tensor) or args[0].dim() == 0:
            return
        if next(module.parameters(recurse=False), None) is None:
            return
        count = self._per_module.get(module, 0) + int(args[0].shape[0])
        self._per_module[module] = count
        if count > self.total:
            self.total = count

    def install(self) -> ExampleGradientCounter:
        if self._handle is None:
            self._handle = module_internals.register_module_forward_pre_hook(self._hook)
            self._hook_key = self._handle.id
        return self

    def uninstall(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> ExampleGradientCounter:
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.uninstall()

    def verify(self) -> str | None:
        """None if the counter is still registered and still sees forward passes, else what went wrong.

        Call it while installed, after the method returned: the canary's own examples are not counted
        in `total`.
        """
        hooks = module_internals._global_forward_pre_hooks
        if (
            self._hook_key not in hooks
            or getattr(hooks[self._hook_key], "__func__", None) is not ExampleGradientCounter._hook
        ):
            return "the harness's global forward hook was removed or replaced"
        total = self.total
        canary = nn.Linear(2, 1)
        try:
            with torch.enable_grad():
                canary(torch.zeros(3, 2))
        except UnlearnerCancelled:
            return None  # the hook ran: it raised because the time was up
        except Exception as exc:  # noqa: BLE001 - a method that broke nn.Module broke the count
            return f"a canary forward pass failed ({type(exc).__name__}: {exc})"
        seen = self._per_module.pop(canary, 0)
        self.total = total
        if seen != 3:
            return "forward passes are no longer counted (nn.Module's call path or hooks were bypassed)"
        return None
