"""Progress display for fixture builds: which model, epoch, time left, and a status (e.g. accuracy).

On a terminal, rich progress bars; elsewhere (a CI log, a file) one plain line per model when it
finishes, because a bar redrawn into a log is unreadable (`━ 3… epochs … left 0…`).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from unlearn_audit.engine.session import AuditSession
    from unlearn_audit.scenarios.cache import FixtureCache


def getting_fixtures(cache: FixtureCache, count: int) -> str:
    """What is about to happen to the fixtures not on this machine yet: with a remote cache most are only
    downloaded, and a line saying "building" would make a user wait for (or stop) a training that never comes."""
    remote = cache.remote
    if remote is None:
        return f"building {count} fixture(s) into {cache.root} (first run only)"
    built_where = "here, where it has not" if remote.read_only else "here and publishing them there, where it has not"
    return (
        f"fetching {count} fixture(s) from {remote.url} into {cache.root}, or building them {built_where} "
        "(first run on this machine only)"
    )


def build_with_progress(audit: AuditSession, needed: list[tuple[str, int]]) -> None:
    """Build (or find in the cache) each (scenario, seed) fixture, showing a bar per model being trained."""
    missing = [(sc, seed) for sc, seed in needed if not audit.cache.is_built(audit.recipes[sc], seed)]
    console = Console(file=sys.stderr)
    if missing:
        console.print(
            f"[bold]unlearn-audit[/]: {getting_fixtures(audit.cache, len(missing))}",
            soft_wrap=True,  # a log is not a terminal: no line breaks at rich's 80 columns
        )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=False,
        disable=not missing or not console.is_terminal,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def bar(label: str, done: int, total: int, seconds: float, status: str = "") -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(label, total=total, status="")
            progress.update(tasks[label], completed=done, status=status)

        def line(label: str, done: int, total: int, seconds: float, status: str = "") -> None:
            if done >= total:
                console.print(
                    f"unlearn-audit: {label}: {done}/{total} done in {seconds:.1f} s"
                    + (f", {status}" if status else ""),
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )

        audit.progress = bar if console.is_terminal else line
        try:
            for scenario, seed in needed:
                audit.fixture(scenario, seed)
        finally:
            audit.progress = None
    # Each fixture's reference measurements are reported as they end, where they are measured (not only loaded):
    # on a cold cache they are minutes in all (the retrain reference and the original under every check).
    started = time.perf_counter()
    for number, (scenario, seed) in enumerate(needed, 1):
        stored = audit.references_stored(scenario, seed)
        began = time.perf_counter()
        audit.prepare_references(scenario, seed)
        took = time.perf_counter() - began
        if not stored:
            console.print(
                f"unlearn-audit: reference measurements of {scenario} seed {seed} ({number}/{len(needed)}): "
                f"{took:.1f} s",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    if missing:
        console.print(
            f"unlearn-audit: reference measurements of {len(needed)} fixture(s) in "
            f"{time.perf_counter() - started:.1f} s (stored in the cache)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
