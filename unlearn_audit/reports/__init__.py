"""Results: the typed record, the JSON report and summary table, the baseline gate, exact report diffs (torch-free)."""
