"""Training: the plain loop, the fast GPU trainer, the relearning attack, parameter interpolation."""
