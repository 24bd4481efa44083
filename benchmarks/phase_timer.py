"""A pytest plugin for the benchmarks: where the wall time of an audit run goes, per process.

    PYTHONPATH=benchmarks PHASE_TIMER_DIR=/tmp/phases python -m pytest -p phase_timer --unlearner ... [-n 2]

Every pytest process (the controller and each xdist worker) appends timestamped events to its own
file in $PHASE_TIMER_DIR: configured, each test's start, the last test's end, session finished,
unconfigured. `summarize(dir, started, seconds)` turns them into phases relative to the run's start: the time
before the first test, each process's test window, and the time from the last test to the end.
Not part of the product: the figures are printed by `bench_tiny.py`, never asserted.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

ENV = "PHASE_TIMER_DIR"
_relaying = False  # an xdist controller: its test events are the workers', relayed


def _record(event: str) -> None:
    folder = os.environ.get(ENV)
    if folder:
        name = os.environ.get("PYTEST_XDIST_WORKER", "controller")
        with open(Path(folder) / f"{name}.log", "a") as f:
            f.write(f"{time.time():.3f} {event}\n")


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    global _relaying
    _relaying = not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") != "no"
    _record("configured")


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    if not _relaying:
        _record("test_start")


def pytest_runtest_logfinish(nodeid: str, location: object) -> None:
    if not _relaying:
        _record("test_end")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    _record("session_finished")


@pytest.hookimpl(trylast=True, specname="pytest_sessionfinish")
def pytest_sessionfinish_done(session: pytest.Session) -> None:
    _record("session_finish_done")


@pytest.hookimpl(tryfirst=True, specname="pytest_unconfigure")
def pytest_unconfigure_started(config: pytest.Config) -> None:
    _record("unconfiguring")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    _record("unconfigured")


def summarize(folder: Path, started: float, seconds: float) -> str:
    """One line per process and one for the run: seconds since `started` (the command's launch, a
    `time.time()`), the run having taken `seconds` in all."""
    lines, first_start, last_end = [], None, None
    for path in sorted(folder.glob("*.log")):
        events: dict[str, list[float]] = {}
        for line in path.read_text().splitlines():
            stamp, _, event = line.partition(" ")
            events.setdefault(event, []).append(float(stamp) - started)
        starts, ends = events.get("test_start", []), events.get("test_end", [])
        if starts:
            first_start = min(starts) if first_start is None else min(first_start, min(starts))
        if ends:
            last_end = max(ends) if last_end is None else max(last_end, max(ends))
        window = f"tests {min(starts):.1f}-{max(ends):.1f} s" if starts and ends else "no tests"
        marks = [
            f"{label} {events[event][-1]:.1f} s"
            for event, label in (
                ("session_finished", "session finishing"),
                ("session_finish_done", "finished"),
                ("unconfiguring", "unconfiguring"),
                ("unconfigured", "unconfigured"),
            )
            if event in events
        ]
        lines.append(
            f"  {path.stem}: configured {events.get('configured', [0.0])[0]:.1f} s, {window}, " + ", ".join(marks)
        )
    if first_start is not None and last_end is not None:
        lines.append(
            f"  run: {first_start:.1f} s before the first test, {last_end - first_start:.1f} s of tests, "
            f"{seconds - last_end:.1f} s from the last test to the exit ({seconds:.1f} s in all)"
        )
    return "\n".join(lines)
