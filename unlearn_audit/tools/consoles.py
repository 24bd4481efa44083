"""The rich console of the command line's output, wide enough for its tables in a CI log.

Why: rich lays out for 80 columns when its output is not a terminal (a CI job's log, a pipe, a file),
and the tables of `compare`, `fixtures list` or `calibrate` then show every column cut to a few letters,
and long paths broken across lines. Outside a terminal, unless `COLUMNS` says otherwise, the console is
`WIDTH` columns wide.
"""

from __future__ import annotations

import os
from typing import IO

from rich.console import Console

WIDTH = 160


def output_console(file: IO[str] | None = None) -> Console:
    """A console on `file` (default stdout): the terminal's width, or `WIDTH` when it is not a terminal."""
    console = Console(file=file)
    if console.is_terminal or os.environ.get("COLUMNS"):
        return console
    return Console(file=file, width=WIDTH)
