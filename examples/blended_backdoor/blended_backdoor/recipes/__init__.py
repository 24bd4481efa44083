"""Recipes of the `tiny-blended` profile (data files only)."""
