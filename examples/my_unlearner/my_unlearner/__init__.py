"""my-unlearner: an example unlearning method packaged for auditing with unlearn-audit.

Audit it with any of

    pytest --unlearner my_unlearner.method:FinetuneThenDampen   # the class
    pytest --unlearner my-finetune                              # the registered entry point
    pytest --unlearner my_unlearner.method:finetune             # the plain-function form

This module imports nothing heavy, so that resolving the spec stays cheap; torch is imported
by `my_unlearner.method`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
