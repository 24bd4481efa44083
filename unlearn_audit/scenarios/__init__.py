"""Scenario fixtures: recipes (TOML), building one poisoned fixture, the checksummed cache, a loaded fixture."""
