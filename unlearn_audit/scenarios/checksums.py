"""Checksummed cache entries: a folder whose `meta.json` (written last) holds the SHA-256 of its other files.

Fixtures and the models several seeds' builds share are both stored this way, so one function says whether
such an entry is intact.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from unlearn_audit.scenarios.recipes import FIXTURE_FORMAT_VERSION

META_FILE = "meta.json"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def entry_problems(path: Path) -> list[str]:
    """What is wrong with the entry at `path` (empty when it is intact): no or unreadable `meta.json`, a file
    it lists missing or changed, another format version."""
    meta_path = path / META_FILE
    if not meta_path.is_file():
        return [f"{path}: no {META_FILE} (incomplete build)"]
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        return [f"{meta_path}: unreadable ({exc})"]
    problems = []
    for name, digest in meta.get("sha256", {}).items():
        f = path / name
        if not f.is_file():
            problems.append(f"{f}: missing")
        elif sha256_file(f) != digest:
            problems.append(f"{f}: checksum mismatch (the file changed after it was built)")
    if meta.get("format") != FIXTURE_FORMAT_VERSION:
        problems.append(f"{path}: fixture format {meta.get('format')} != {FIXTURE_FORMAT_VERSION}")
    return problems
