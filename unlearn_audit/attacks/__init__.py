"""Poisoning attacks: one module per attack, each owning its build, validation, poison metric and checks.

`registry.get_attack(kind)` returns the `Attack` of a recipe's `[attack] kind`; the functions of each
module (e.g. `make_gaussian_poison`, `brew_for_targets`) are usable on their own, without pytest.
Import them from their modules (`unlearn_audit.attacks.witches_brew`, ...): this package imports
nothing, so that loading one attack does not load the others.
"""
