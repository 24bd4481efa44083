"""unlearn-audit: a pytest plugin that audits machine-unlearning methods against data poisoning.

Public API (imported lazily so that `import unlearn_audit` stays cheap and torch-free):
`Unlearner`, `UnlearningRequest`, `ExampleSet`, `Budget`, `TrainingRecipe`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers; at runtime the names load lazily below
    from unlearn_audit.protocol import Budget, ExampleSet, TrainingRecipe, Unlearner, UnlearningRequest

__version__ = "0.1.0"

_PUBLIC = {"Unlearner", "UnlearningRequest", "ExampleSet", "Budget", "TrainingRecipe"}  # __all__ below lists them


def __getattr__(name: str):  # PEP 562
    if name in _PUBLIC:
        from unlearn_audit import protocol

        return getattr(protocol, name)
    raise AttributeError(f"module 'unlearn_audit' has no attribute {name!r}")


__all__ = ["Budget", "ExampleSet", "TrainingRecipe", "Unlearner", "UnlearningRequest", "__version__"]
