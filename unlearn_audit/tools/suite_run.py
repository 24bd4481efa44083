"""The pytest command line that runs the conformance suite for a calibration (local or one Ray cell)."""

from __future__ import annotations

import sys
from pathlib import Path


def suite_command(
    methods: list[str],
    profile: str,
    seeds: str,
    report: Path,
    cache: str | Path | None = None,
    select: str | None = None,
    workers: int | None = None,
    keep_seed_parts: bool = False,
) -> list[str]:
    """`python -m pytest` auditing `methods` (names in `unlearn_audit.methods`, or full specs) on `seeds`,
    writing the JSON report to `report`; `select` is a pytest `-k` expression (e.g. one scenario)."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--audit-profile",
        profile,
        "--audit-seeds",
        str(seeds),
        "--audit-report",
        str(report),
    ]
    for m in methods:
        cmd += ["--unlearner", method_spec(m)]
    if cache:
        cmd += ["--audit-cache", str(cache)]
    if select:
        cmd += ["-k", select]
    if workers:
        cmd += ["-n", str(workers)]
    if keep_seed_parts:
        cmd += ["--audit-keep-seed-parts"]
    return cmd


def method_spec(method: str) -> str:
    return method if ":" in method else f"unlearn_audit.methods:{method}"
