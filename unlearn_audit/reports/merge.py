"""Join the JSON reports of the shards of one audit (`--audit-shard i/n`) into one report.

The shards must be of one audit: a schema whose results read as today's, the same options apart
from `shard`, every shard 1..N of one split exactly once, and no result may appear in two of them.
The merged report is what an unsharded run writes (its results sorted the same way, in today's
layout), with `merged_from` naming the shard files. Where shards measured one fixture on different
builds of it (jobs that each built their own cache on other machines), `fixtures_of_several_builds`
says which.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unlearn_audit.reports.record import COMPATIBLE_SCHEMAS, SCHEMA_VERSION, ResultRecord, builds_measured_on


class MergeError(ValueError):
    """The reports are not shards of one audit; the message says which file and why."""


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MergeError(f"{path}: no such file")
    try:
        doc = json.loads(path.read_text())
        version = doc["schema_version"]
        doc["results"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MergeError(f"{path}: not an unlearn-audit JSON report ({exc!r})") from None
    if version not in COMPATIBLE_SCHEMAS:
        raise MergeError(f"{path}: report schema {version}, expected {SCHEMA_VERSION}")
    return doc


def merge_reports(paths: list[Path]) -> dict[str, Any]:
    if not paths:
        raise MergeError("no reports to merge")
    docs = [_load(p) for p in paths]
    common = {k: v for k, v in docs[0].get("options", {}).items() if k != "shard"}
    records: dict[tuple[Any, ...], tuple[Path, ResultRecord]] = {}
    for path, doc in zip(paths, docs):
        options = {k: v for k, v in doc.get("options", {}).items() if k != "shard"}
        if options != common:
            differing = sorted(k for k in set(options) | set(common) if options.get(k) != common.get(k))
            raise MergeError(
                f"{path}: not a shard of the same audit as {paths[0]} (options differ: {', '.join(differing)})"
            )
        for data in doc["results"]:
            record = ResultRecord.from_json(data)
            if record.key in records:
                raise MergeError(f"{path}: result {record.key} is also in {records[record.key][0]}")
            records[record.key] = (path, record)
    check_shards(paths, docs)
    ordered = sorted(
        (r for _, r in records.values()), key=lambda r: (str(r.unlearner), str(r.check), str(r.scenario), r.seeds or [])
    )
    merged = dict(docs[0])
    merged["schema_version"] = SCHEMA_VERSION  # the results are written in today's layout
    merged["options"] = {**common, "shard": None}
    merged["merged_from"] = [str(p) for p in paths]
    merged["timings"] = {"session_seconds": [d.get("timings", {}).get("session_seconds") for d in docs]}
    merged["results"] = [r.to_json() for r in ordered]
    differing = fixtures_of_several_builds([(path, r) for path, r in records.values()])
    if differing:
        merged["fixtures_of_several_builds"] = differing
    return merged


def check_shards(paths: list[Path], docs: list[dict[str, Any]]) -> None:
    """Shards (`options.shard` = [i, n]) must be all n of one split, each once: a merge of some of them would
    look like an unsharded report with cases missing, and one of 1/2 and 2/3 would mix two splits."""
    shards = [(path, (doc.get("options") or {}).get("shard")) for path, doc in zip(paths, docs)]
    given = [(path, tuple(shard)) for path, shard in shards if shard]
    if not given:
        return
    unsharded = [str(path) for path, shard in shards if not shard]
    if unsharded:
        raise MergeError(f"{', '.join(unsharded)}: not a shard (no --audit-shard), but {given[0][0]} is one")
    splits = sorted({n for _, (_, n) in given})
    if len(splits) > 1:
        raise MergeError(
            "shards of different splits: "
            + "; ".join(f"{path} is shard {i}/{n}" for path, (i, n) in given)
            + " (merge the shards of one --audit-shard I/N run, N the same in all)"
        )
    n = splits[0]
    seen: dict[int, Path] = {}
    for path, (i, _) in given:
        if i in seen:
            raise MergeError(f"{path}: shard {i}/{n} is also in {seen[i]} (give each shard once)")
        seen[i] = path
    missing = [i for i in range(1, n + 1) if i not in seen]
    if missing:
        raise MergeError(
            f"missing shard(s) {', '.join(f'{i}/{n}' for i in missing)}: got only "
            f"{', '.join(f'{i}/{n} ({seen[i]})' for i in sorted(seen))}; a merge of part of the shards would "
            "read as a whole audit with cases left out"
        )


def fixtures_of_several_builds(records: list[tuple[Path, ResultRecord]]) -> list[str]:
    """One line per fixture that the shards measured on different builds (each job built its own, on other
    kernels or another torch): their results are each valid, but not measured on the same models as an
    unsharded run's would be."""
    builds: dict[tuple[Any, ...], dict[str, set[str]]] = {}
    for path, record in records:
        for build in builds_measured_on(record.to_json()) or ():
            fixture = (record.profile, record.scenario, build.seed)
            built = f"{build.fixture_id} ({build.built_with})"
            builds.setdefault(fixture, {}).setdefault(built, set()).add(str(path))
    return [
        f"{profile}/{scenario} seed {seed}: "
        + "; ".join(f"{built} in {', '.join(sorted(paths))}" for built, paths in sorted(by_build.items()))
        for (profile, scenario, seed), by_build in sorted(builds.items(), key=str)
        if len(by_build) > 1
    ]
