"""`unlearn-audit merge`: which sets of shard reports make one audit (the merge itself: plugin/test_sharding.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearn_audit.reports.merge import MergeError, merge_reports
from unlearn_audit.reports.record import SCHEMA_VERSION
from unlearn_audit.tools.cli import main


def shard(tmp_path: Path, i: int, n: int | None, name: str | None = None) -> Path:
    """A shard report of a split into `n` (None: an unsharded report) holding one result of its own."""
    result = {
        "nodeid": f"test[{i}]",
        "unlearner": "m:M",
        "check": "utility_preserved",
        "scenario": f"s{i}",
        "profile": "tiny",
        "seed": 0,
        "budget": 0.1,
        "outcome": "passed",
    }
    doc = {
        "schema_version": SCHEMA_VERSION,
        "options": {"profile": "tiny", "shard": [i, n] if n else None},
        "results": [result],
    }
    path = tmp_path / (name or f"shard-{i}-of-{n}.json")
    path.write_text(json.dumps(doc))
    return path


def test_every_shard_once_merges(tmp_path: Path) -> None:
    merged = merge_reports([shard(tmp_path, 2, 3), shard(tmp_path, 1, 3), shard(tmp_path, 3, 3)])
    assert merged["options"]["shard"] is None and len(merged["results"]) == 3


def test_a_missing_shard_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "merged.json"
    assert main(["merge", str(shard(tmp_path, 1, 2)), "--out", str(out)]) == 2
    said = capsys.readouterr().out.replace("\n", " ")
    assert "missing shard(s) 2/2: got only 1/2" in said and not out.exists()
    with pytest.raises(MergeError, match=r"missing shard\(s\) 2/4, 4/4: got only 1/4 .*, 3/4 "):
        merge_reports([shard(tmp_path, 1, 4), shard(tmp_path, 3, 4)])


def test_shards_of_different_splits_do_not_merge(tmp_path: Path) -> None:
    with pytest.raises(MergeError, match=r"shards of different splits: .* is shard 1/2; .* is shard 2/3"):
        merge_reports([shard(tmp_path, 1, 2), shard(tmp_path, 2, 3)])


def test_a_shard_given_twice_is_named(tmp_path: Path) -> None:
    first = shard(tmp_path, 1, 2)
    again = shard(tmp_path, 1, 2, "rerun.json")
    again.write_text(again.read_text().replace("s1", "s9"))  # a rerun that dealt other cases: no result clashes
    with pytest.raises(MergeError, match=rf"rerun.json: shard 1/2 is also in {first}"):
        merge_reports([first, again, shard(tmp_path, 2, 2)])


def test_a_shard_and_an_unsharded_report_do_not_merge(tmp_path: Path) -> None:
    with pytest.raises(MergeError, match=r"whole.json: not a shard \(no --audit-shard\)"):
        merge_reports([shard(tmp_path, 1, 2), shard(tmp_path, 5, None, "whole.json"), shard(tmp_path, 2, 2)])


def test_unsharded_reports_still_merge(tmp_path: Path) -> None:
    """Reports without `shard` (e.g. of runs split by -k) merge as before: there is no split to check."""
    merged = merge_reports([shard(tmp_path, 1, None, "a.json"), shard(tmp_path, 2, None, "b.json")])
    assert len(merged["results"]) == 2


def test_a_missing_file_is_no_such_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["merge", str(tmp_path / "nope.json"), "--out", str(tmp_path / "m.json")]) == 2
    said = capsys.readouterr().out
    assert f"{tmp_path / 'nope.json'}: no such file" in said.replace("\n", "") and "FileNotFoundError" not in said
