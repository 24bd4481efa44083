"""Progress display for fixture builds (rich): which model, epoch, time left, and a status (e.g. accuracy)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from unlearn_audit.engine.session import AuditSession


def build_with_progress(audit: "AuditSession", needed: list[tuple[str, int]]) -> None:
    """Build (or find in the cache) each (scenario, seed) fixture, showing a bar per model being trained."""
    missing = [(sc, seed) for sc, seed in needed if not audit.cache.is_built(audit.recipes[sc], seed)]
    console = Console(file=sys.stderr)
    if missing:
        console.print(f"[bold]unlearn-audit[/]: building {len(missing)} fixture(s) into {audit.cache.root} (first run only)")
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
        TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
        console=console, transient=False,
        disable=not missing,
    ) as progress:
        tasks: dict[str, int] = {}

        def report(label: str, done: int, total: int, seconds: float, status: str = "") -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total, status="")
            progress.update(tasks[label], completed=done, status=status)

        audit.progress = report
        try:
            for scenario, seed in needed:
                audit.fixture(scenario, seed)
        finally:
            audit.progress = None
