"""`--audit-shard i/n` and `unlearn-audit merge`: a sharded audit, merged, equals the unsharded one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearn_audit.plugin.sharding import groups_in_shard, parse_shard
from unlearn_audit.reports.diff import diff_reports
from unlearn_audit.reports.merge import MergeError, merge_reports
from unlearn_audit.tools.cli import main as cli

METHODS = "unlearn_audit.methods"


def test_parse_shard() -> None:
    assert parse_shard("2/3") == (2, 3) and parse_shard(" 1 / 1 ") == (1, 1)
    for bad in ("0/3", "4/3", "1", "a/b", "1/0", "-1/2"):
        with pytest.raises(ValueError):
            parse_shard(bad)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_shards_partition_the_cases_evenly(n: int) -> None:
    groups = [f"m{j}|tiny|s{k}|{seed}|0.1" for j in range(3) for k in range(5) for seed in range(2)]
    shards = [groups_in_shard(groups + groups[:4], (i, n)) for i in range(1, n + 1)]  # duplicates: one case each
    assert set().union(*shards) == set(groups) and sum(map(len, shards)) == len(groups)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_bad_shard_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--unlearner", f"{METHODS}:NoOp", "--audit-shard", "3/2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--audit-shard must be I/N with 1 <= I <= N" in result.stderr.str()


def test_sharded_and_merged_equals_unsharded(pytester: pytest.Pytester, audit_env: Path, tmp_path: Path) -> None:
    common = [
        "--unlearner",
        f"{METHODS}:NoOp",
        "--unlearner",
        f"{METHODS}:GradientDescent",
        "-k",
        "backdoor",
        "-p",
        "no:cacheprovider",
    ]
    whole = tmp_path / "whole.json"
    pytester.runpytest(*common, "--audit-report", str(whole))
    shards = []
    for i in (1, 2):
        path = tmp_path / f"shard{i}.json"
        result = pytester.runpytest(*common, "--audit-shard", f"{i}/2", "--audit-report", str(path))
        result.assert_outcomes(failed=3, passed=2)  # one case each: 5 checks, of which NoOp and GD fail 3
        shards.append(path)
    one = {r["unlearner"] for r in json.loads(shards[0].read_text())["results"]}
    two = {r["unlearner"] for r in json.loads(shards[1].read_text())["results"]}
    assert len(one) == len(two) == 1 and one != two  # each case whole in one shard
    merged = tmp_path / "merged.json"
    assert cli(["merge", *map(str, shards), "--out", str(merged)]) == 1  # failures, as the unsharded run
    assert json.loads(merged.read_text())["options"]["shard"] is None
    assert "fixtures_of_several_builds" not in json.loads(merged.read_text())  # one cache: one build
    assert diff_reports(whole, merged) == []
    # A job that built its own fixtures elsewhere (other kernels): the merge says which fixture differs.
    doc = json.loads(shards[1].read_text())
    for r in doc["results"]:
        r["meta"].update(fixture_id="0123456789abcdef", fixture_built_with="torch 2.11.0 on cuda")
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(doc))
    several = merge_reports([shards[0], elsewhere])["fixtures_of_several_builds"]
    assert len(several) == 1 and several[0].startswith("tiny/backdoor seed 0: ")
    assert "0123456789abcdef (torch 2.11.0 on cuda) in " + str(elsewhere) in several[0]
    with pytest.raises(MergeError, match="is also in"):
        merge_reports([shards[0], shards[0]])
    assert cli(["merge", str(shards[0]), str(whole), "--out", str(tmp_path / "x.json")]) == 2
