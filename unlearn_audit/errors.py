"""Errors the plugin reports as usage errors rather than tracebacks (torch-free, so the plugin can import it)."""

from __future__ import annotations


class ResourceUnavailable(RuntimeError):
    """Something a profile needs (an optional package, pretrained weights, a data set) cannot be loaded here.

    The message says what to install or make reachable.
    """


class MissingExtra(ResourceUnavailable, ImportError):
    """An optional extra of unlearn-audit is not installed."""


class RecipeError(ValueError):
    """A scenario recipe that cannot run: an unknown attack kind, a check its attack cannot judge, a bad table."""


class UnusableDevice(ValueError):
    """`--audit-device` names a device this torch cannot use (a CUDA device on a CPU build, say)."""
