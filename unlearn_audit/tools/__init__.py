"""Command-line tools: `unlearn-audit` (fixtures, calibrate, compare, diff, plot, data import) and progress display."""
