"""The line a fixture build starts with: it says what will happen to the fixtures this machine lacks."""

from __future__ import annotations

from pathlib import Path

from unlearn_audit.scenarios.cache import FixtureCache
from unlearn_audit.tools.progress import getting_fixtures


def test_a_local_cache_builds() -> None:
    line = getting_fixtures(FixtureCache(Path("/c")), 2)
    assert line == "building 2 fixture(s) into /c (first run only)"


def test_a_read_only_remote_is_fetched_from_not_said_to_be_built() -> None:
    cache = FixtureCache(Path("/c"), remote="http://127.0.0.1:8765")
    line = getting_fixtures(cache, 1)
    assert line.startswith(f"fetching 1 fixture(s) from http://127.0.0.1:8765 into {cache.root}, ")
    assert "or building them here, where it has not" in line and "published" not in line


def test_a_writable_remote_publishes_what_is_built_here() -> None:
    line = getting_fixtures(FixtureCache(Path("/c"), remote="memory://shared"), 3)
    assert line.startswith("fetching 3 fixture(s) from memory://shared into /c/remote/")
    assert "or building them here and publishing them there, where it has not" in line
