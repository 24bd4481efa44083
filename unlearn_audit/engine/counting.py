"""The harness's own count of example-gradients, and the proof that it kept counting.

A global forward hook (`torch.nn.modules.module.register_module_forward_hook`, with keyword arguments)
sees every forward pass of every module in the process, including models the method builds itself, deep
copies, and models whose per-module hooks the method cleared. Each module that holds parameters counts
the examples forwarded with autograd enabled: the leading dimension of its first tensor argument,
positional or keyword (`layer(input=x)` counts as `layer(x)` does), or, inside `torch.vmap`, one example
per lane of the map (`engine.vmap_lanes`: per-example gradients of a batch count as the batch), and not
again when activation checkpointing recomputes them (`engine.recompute`). A TorchScript module counts
for its whole tree, whose submodules it runs without calling them from Python. Inside `torch.compile`d
code the hook is traced into the graph and counts with a tensor operation, so a compiled method runs
compiled (`fullgraph=True` included) and is counted exactly. The spend is the maximum over modules, so a
method that trains only part of a network (a head on precomputed features) is counted as well. A global
forward pre-hook stops a method whose time is up.

This is a count of what ordinary code does, not a defence against a method set on hiding its compute:
the count lives in the method's own process. `verify()` checks after `unlearn()` that both hooks still
work: canary forward passes are still counted, in and out of a vmap, and still stopped after a deadline;
so removing the hooks for good, replacing `nn.Module.__call__` or putting the uncounted vmap back fails
`budget_respected` ("the spend could not be verified"). What it cannot see is listed in the trust model:
hooks removed and put back, modules run outside `nn.Module.__call__` (`forward` called directly, or
layers as functions of their weights), compute in a forked child, examples moved out of the leading
dimension, functorch's private vmap, training hidden in a checkpoint's recomputation, and the counter
itself edited.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from typing import Any

import torch
import torch.func
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.nn.utils.rnn import PackedSequence

from unlearn_audit.engine import recompute, transforms, vmap_lanes


def wrap_torch_transforms() -> None:
    """Wrap torch's public vmaps and activation checkpointing so that the count sees through them: a lane of
    a map is an example (`engine.vmap_lanes`), a checkpoint's recomputation is not (`engine.recompute`).
    Idempotent, results unchanged. Call it before the method's module is imported, so that the names it
    imports (`from torch.func import vmap`) are the wrapped ones."""
    vmap_lanes.install()
    transforms.install()
    recompute.install()


def _scripted(module: nn.Module) -> bool:
    """A TorchScript module (`torch.jit.trace`/`script`) runs its submodules without calling them from Python:
    only its own call is seen, so it counts for the parameters of its whole tree."""
    return isinstance(module, torch.jit.ScriptModule)


def _batch_size(module: nn.Module, first: torch.Tensor | PackedSequence) -> Any:
    """How many examples a module's first input holds: its leading dimension, or, for the modules that take
    time-major input (`batch_first=False`: RNNs, attention, transformer layers), its second where it is
    batched; a packed sequence's first batch size. None for a scalar."""
    if isinstance(first, PackedSequence):
        return first.batch_sizes[0] if first.batch_sizes.numel() else None  # a tensor: no host sync when compiled
    if first.dim() == 0:
        return None
    if getattr(module, "batch_first", True) is False:
        return first.shape[1] if first.dim() == 3 else 1  # (length, batch, features), or one unbatched sequence
    return first.shape[0]


_compiling = getattr(torch.compiler, "is_compiling", lambda: False)  # torch >= 2.3; before, hooks stay eager


@torch.compiler.disable
def _count_outside_the_graph(counter: ExampleGradientCounter, module: nn.Module, examples: Any) -> None:
    """Inside a functorch transform in compiled code, where a graph may not mutate a tensor: Dynamo runs this
    (and so the transformed code around it) eagerly, and the count is kept in Python."""
    counter._count_eagerly(module, examples)


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
        self._eager_total = 0  # the running maximum of the counts kept in Python
        self._per_module: weakref.WeakKeyDictionary[nn.Module, int] = weakref.WeakKeyDictionary()
        # Counts of forward passes inside `torch.compile`d code, as tensors the compiled graph adds to (a
        # Python count would be read while Dynamo traces, so it would guard on it and recompile each step).
        # Held strongly, so that a compiled module's count outlives it; the counter lives for one unlearn().
        self._in_graph: dict[nn.Module, torch.Tensor] = {}
        self._lock = threading.Lock()  # a method's threads count into the same tallies
        self._handle: Any = None
        self._count_handle: Any = None

    @property
    def total(self) -> int:
        """The spend: the largest count of any module, counted eagerly and in compiled graphs together."""
        best = self._eager_total
        for module, tally in list(self._in_graph.items()):
            best = max(best, self._per_module.get(module, 0) + int(tally))
        return best

    def _hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Before each forward pass: stop a method whose time is up."""
        if self.cancelled:
            raise UnlearnerCancelled("unlearner exceeded its time limit")
        if not _compiling() and time.monotonic() > self.deadline:  # Dynamo cannot trace a clock
            self.cancelled = True
            raise UnlearnerCancelled("unlearner exceeded its time limit")

    def _count(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        """After each forward pass: its examples, if the module has parameters and autograd was on."""
        if not torch.is_grad_enabled() or next(module.parameters(recurse=_scripted(module)), None) is None:
            return
        if recompute.recomputing():  # a checkpoint rebuilding activations: these examples were counted
            return
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, (torch.Tensor, PackedSequence))), None)
        if first is None:
            return
        lanes = vmap_lanes.lanes()  # inside a vmap: one per lane, whatever a lane's tensor looks like
        examples = lanes if lanes is not None else _batch_size(module, first)
        if examples is None:
            return
        if isinstance(first, PackedSequence):
            first = first.data
        if _compiling():  # traced into the compiled graph: the count is one of its tensor operations
            if lanes is not None or transforms.inside():  # no mutation allowed there
                _count_outside_the_graph(self, module, examples)
                return
            tally = self._in_graph.get(module)
            if tally is None:
                tally = torch.zeros((), dtype=torch.int64, device=first.device)
                self._in_graph[module] = tally
            tally.add_(examples)
            return
        self._count_eagerly(module, examples)

    def _count_eagerly(self, module: nn.Module, examples: Any) -> None:
        with self._lock:
            count = self._per_module.get(module, 0) + int(examples)
            self._per_module[module] = count
            if count > self._eager_total:
                self._eager_total = count

    def install(self) -> ExampleGradientCounter:
        wrap_torch_transforms()  # idempotent; a worker calls it earlier, before the method's module is imported
        if self._handle is None:
            # Dynamo does not guard compiled code on module hooks: code compiled while no counter was installed
            # (at the method's import, or by the harness in the inline mode) would run uncounted. Forget it all
            # (nothing was compiled where Dynamo was never imported: importing it would cost about a second).
            if "torch._dynamo" in sys.modules:
                torch.compiler.reset()
            self._handle = register_module_forward_pre_hook(self._hook)
            self._count_handle = register_module_forward_hook(self._count, with_kwargs=True)
        return self

    def uninstall(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._count_handle.remove()
            self._handle = None

    def __enter__(self) -> ExampleGradientCounter:
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.uninstall()

    def verify(self) -> str | None:
        """None if the counter still counts and still enforces the deadline, else what went wrong.

        Checked by what the hooks do, not by looking them up among torch's own (private) hook tables: canary
        forward passes, positional, keyword and in a vmap of 5 lanes, must be counted, and one after a deadline
        moved into the past must be stopped. Call it while installed, after the method returned: the canaries' examples
        are not counted in `total`, and the deadline is put back.
        """
        total, deadline, cancelled = self._eager_total, self.deadline, self.cancelled
        canary = nn.Linear(2, 1)
        try:
            with torch.enable_grad():
                canary(torch.zeros(3, 2))
                canary(input=torch.zeros(4, 2))
                torch.func.vmap(canary)(torch.zeros(5, 2))  # 5 lanes of one example each
        except UnlearnerCancelled:
            return None  # the pre-hook ran: it raised because the time was up
        except Exception as exc:  # noqa: BLE001 - a method that broke nn.Module broke the count
            return f"a canary forward pass failed ({type(exc).__name__}: {exc})"
        finally:
            seen = self._per_module.pop(canary, 0)
            self._eager_total = total
        if seen == 9 or (seen == 12 and not vmap_lanes.installed()):  # 9: the canary's vmap counted its 2 features
            return "torch.vmap was replaced by one that does not count its lanes: examples in a vmap are not counted"
        if seen != 12:  # 3 + 4 + 5 lanes
            return (
                "the harness's global forward hook was removed or replaced, or nn.Module's call path bypassed: "
                "forward passes are no longer counted"
            )
        self.deadline = float("-inf")
        try:
            canary(torch.zeros(1, 2))
        except UnlearnerCancelled:
            return None
        except Exception as exc:  # noqa: BLE001
            return f"a canary forward pass failed ({type(exc).__name__}: {exc})"
        finally:
            self.deadline, self.cancelled = deadline, cancelled
            self._per_module.pop(canary, None)
            self._eager_total = total
        return (
            "the harness's global forward hook was removed or replaced: its time limit no longer stops forward passes"
        )
