"""Seeds derived from a fixture's seed, one per purpose, so that the parts of a fixture are independent."""

from __future__ import annotations

import hashlib


def derived_seed(seed: int, purpose: str) -> int:
    """Independent, reproducible seeds for the parts of a fixture (and for the unlearner)."""
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:6], "big")
