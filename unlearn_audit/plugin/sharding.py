"""Split one audit over several CI jobs: `--audit-shard i/n` keeps every n-th audit case (torch-free).

A case is one (unlearner, scenario, seeds, budget): all its checks share its `unlearn()` calls (and
pool its seeds), so they stay in one shard. Cases are sorted by their group key and dealt out round-robin, so the split
is deterministic (identical in every job and every xdist worker), balanced to within one case, and
every shard gets a case as long as there are at least n. Tests that are not audit cases (a user's
own, run beside the suite) stay in every shard. `unlearn-audit merge` joins the shards' reports.
"""

from __future__ import annotations

import re

SHARD_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """ "2/3" -> (2, 3); a ValueError unless 1 <= i <= n."""
    match = SHARD_PATTERN.match(text)
    if not match:
        raise ValueError(text)
    i, n = int(match[1]), int(match[2])
    if not 1 <= i <= n:
        raise ValueError(text)
    return i, n


def groups_in_shard(groups: list[str], shard: tuple[int, int]) -> set[str]:
    """The case groups shard `i` of `n` runs: the sorted distinct groups at positions i-1, i-1+n, ..."""
    i, n = shard
    ordered = sorted(set(groups))
    return set(ordered[i - 1 :: n])
