"""`unlearn-audit data import cifar10 PATH [--data-dir DIR] [--allow-partial]`: an image-folder tree into
the cifar10 profile's data directory (see `unlearn_audit.profiles.cifar.image_folder`), with a progress bar."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from unlearn_audit.tools.consoles import output_console


def add_parser(sub: Any) -> None:
    """The `data` command group of the console script."""
    data = sub.add_parser("data", help="bring a data set into the data directory of a profile")
    dsub = data.add_subparsers(dest="action", required=True)
    imp = dsub.add_parser(
        "import", help="import CIFAR-10 from an image-folder tree PATH/{train,test}/<class>/*.png|jpg|jpeg"
    )
    imp.add_argument("dataset", choices=["cifar10"])
    imp.add_argument("path", type=Path, help="the tree's root (holding train/ and test/)")
    imp.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data directory, as $UNLEARN_AUDIT_DATA: the file goes to DIR/cifar10/ "
        "(default: $UNLEARN_AUDIT_DATA, else the platform user data dir)",
    )
    imp.add_argument(
        "--allow-partial",
        action="store_true",
        help="do not require 5,000 train / 1,000 test images per class (small trees for tests)",
    )


def _plain_progress(console: Console) -> Callable[[str, int, int], None]:
    """Progress as plain lines (not a terminal): one per tenth of each split."""
    started = time.perf_counter()

    def report(split: str, done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            console.print(
                f"  {split}: {done:,}/{total:,} images read ({time.perf_counter() - started:.1f} s)",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    return report


def main(args: argparse.Namespace) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from unlearn_audit.errors import ResourceUnavailable
    from unlearn_audit.profiles.cifar.data import BATCHES_DIR, DATA_ENV, default_data_dir
    from unlearn_audit.profiles.cifar.image_folder import import_image_folder

    console = output_console()
    err = output_console(sys.stderr)
    target = args.data_dir.expanduser() / "cifar10" if args.data_dir else default_data_dir()
    err.print(
        f"[bold]unlearn-audit[/]: importing CIFAR-10 from {args.path} into {target}", highlight=False, soft_wrap=True
    )
    started = time.perf_counter()
    try:
        if err.is_terminal:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("images"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                console=err,
            ) as progress:
                tasks: dict[str, Any] = {}

                def report(split: str, done: int, total: int) -> None:
                    if split not in tasks:
                        tasks[split] = progress.add_task(f"reading {split}", total=total)
                    if done == total or done % 64 == 0:
                        progress.update(tasks[split], completed=done)

                result = import_image_folder(args.path, target, args.allow_partial, report)
        else:
            result = import_image_folder(args.path, target, args.allow_partial, _plain_progress(err))
    except ResourceUnavailable as exc:  # a malformed tree or a missing extra: the message says what
        console.print(f"error: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        return 2
    shapes = ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in result.shapes.items())
    console.print(
        f"wrote {result.path} in {time.perf_counter() - started:.1f} s: {shapes}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if result.ignored:
        console.print(
            f"note: ignored {result.ignored} non-image file(s) in the class folders", markup=False, soft_wrap=True
        )
    if not result.complete:
        console.print(
            "note: partial import (--allow-partial): not the full CIFAR-10",
            style="yellow",
            markup=False,
            soft_wrap=True,
        )
    if (target / BATCHES_DIR).is_dir():
        console.print(
            f"note: {target / BATCHES_DIR} exists and is read in preference to the import",
            style="yellow",
            markup=False,
            soft_wrap=True,
        )
    if args.data_dir:
        console.print(
            f"use it with: {DATA_ENV}={args.data_dir.expanduser()} pytest --audit-profile cifar10-resnet18 ...",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    return 0
