"""Pool the reports of one-seed runs (cells) into the report of one run over all their seeds.

`unlearn-audit calibrate --engine ray` runs each (method, seed) as its own suite run with
`--audit-keep-seed-parts`, so every result carries its seed's unpooled results
(`checks.seed_parts`). Here the results of one test (unlearner, check, scenario, profile, budget)
from every cell are pooled by the suite's own `checks.pooling.pool_check`, so the assembled report
has the verdicts, scores and details that a single `--audit-seeds A,B,...` run writes
(`unlearn-audit diff` finds no difference; only run metadata differs: `assembled_from`, the
timings, `created`, and `meta`, which keeps each seed's run metadata but not its parts).

`merge` joins shards that split the tests; this joins cells that split the seeds of each test.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from unlearn_audit.checks.pooling import pool_check, pooled_meta
from unlearn_audit.checks.seed_parts import SEED_PARTS_KEY, SeedParts
from unlearn_audit.reports.record import (
    COMPATIBLE_SCHEMAS,
    OUTCOME_OF_VERDICT,
    SCHEMA_VERSION,
    ResultRecord,
    seeds_range,
)

CELL_OPTIONS = ("unlearners", "seeds", "keep_seed_parts")
"""Report options that differ between the cells of one sweep (each cell has its own method and seed)."""


class AssembleError(ValueError):
    """The cell reports do not make up one run; the message says which and why."""


def _label(seeds: list[int] | tuple[int, ...]) -> str:
    return ("seed" if len(seeds) == 1 else "seeds") + seeds_range(seeds)  # as the suite's test ids show them


def assemble_reports(cells: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The pooled report of the cells' (label, report document) pairs, in the order the cells were given
    (the unlearners and seeds of the result are ordered by first appearance, as the local run orders them)."""
    if not cells:
        raise AssembleError("no cell reports to assemble")
    first_label, first = cells[0]
    common = {k: v for k, v in first.get("options", {}).items() if k not in CELL_OPTIONS}
    unlearners: list[str] = []
    seeds: list[int] = []
    tests: dict[tuple[Any, ...], list[tuple[str, ResultRecord]]] = defaultdict(list)
    for label, doc in cells:
        if doc.get("schema_version") not in COMPATIBLE_SCHEMAS:
            raise AssembleError(f"{label}: report schema {doc.get('schema_version')}, expected {SCHEMA_VERSION}")
        options = doc.get("options", {})
        if not options.get("keep_seed_parts"):
            raise AssembleError(f"{label}: its run did not keep its seeds' parts (--audit-keep-seed-parts)")
        mine = {k: v for k, v in options.items() if k not in CELL_OPTIONS}
        if mine != common:
            differing = sorted(k for k in set(mine) | set(common) if mine.get(k) != common.get(k))
            raise AssembleError(
                f"{label}: not a cell of the same run as {first_label} (options differ: {', '.join(differing)})"
            )
        unlearners += [u for u in options.get("unlearners", []) if u not in unlearners]
        seeds += [s for s in options.get("seeds", []) if s not in seeds]
        for data in doc["results"]:
            record = ResultRecord.from_json(data)
            tests[record.key[:4] + record.key[5:]].append((label, record))
    results = [_pooled(parts, seeds) for parts in tests.values()]
    results.sort(key=lambda r: (str(r.unlearner), str(r.check), str(r.scenario), r.seeds or []))
    out = dict(first)
    out["schema_version"] = SCHEMA_VERSION  # the results are written in today's layout
    out["options"] = {**first.get("options", {}), "unlearners": unlearners, "seeds": seeds, "keep_seed_parts": False}
    out["assembled_from"] = [label for label, _ in cells]
    out["timings"] = {"session_seconds": [doc.get("timings", {}).get("session_seconds") for _, doc in cells]}
    out["results"] = [r.to_json() for r in results]
    return out


def _pooled(cells: list[tuple[str, ResultRecord]], all_seeds: list[int]) -> ResultRecord:
    """One test's record from its cells' records (each holding the parts of its seeds)."""
    cells = sorted(cells, key=lambda c: [all_seeds.index(s) for s in c[1].seeds or []])
    label, head = cells[0]
    seeds = [s for _, r in cells for s in r.seeds or []]
    where = f"{head.unlearner} {head.check} on {head.scenario}"
    if sorted(seeds) != sorted(all_seeds):
        raise AssembleError(f"{where}: the cells judged seeds {seeds}, the run has seeds {all_seeds}")
    errored = [(lab, r) for lab, r in cells if SEED_PARTS_KEY not in r.meta]
    if errored:  # the test did not get to be judged on some seed (an error before the check ran): so does the pool
        lab, r = errored[0]
        return ResultRecord.from_json(
            {
                **r.to_json(),
                "nodeid": _nodeid(r, seeds),
                "seed": None,
                "seeds": seeds,
                "message": f"{lab}: {r.message}",
                "duration": sum(c.duration for _, c in cells),
            }
        )
    parts = SeedParts.from_text(cells[0][1].meta[SEED_PARTS_KEY])
    try:
        for _, r in cells[1:]:
            parts = parts.joined(SeedParts.from_text(r.meta[SEED_PARTS_KEY]))
    except ValueError as exc:
        raise AssembleError(f"{where}: {exc}") from None
    result = pool_check(
        str(head.check),
        list(parts.seeds),
        list(parts.results),
        list(parts.utility),
        parts.alpha,
        parts.utility_alpha,
        parts.family_rule,
    )
    judged = result.to_json()
    outcome = OUTCOME_OF_VERDICT[result.verdict]
    metas = [m for _, r in cells for m in _seed_metas(r)]
    return ResultRecord(
        nodeid=_nodeid(head, seeds),
        unlearner=head.unlearner,
        check=head.check,
        scenario=head.scenario,
        profile=head.profile,
        seed=seeds[0] if len(seeds) == 1 else None,
        budget=head.budget,
        outcome=outcome,
        verdict=judged["verdict"],
        score=judged["score"],
        stderr=judged["stderr"],
        reference=judged["reference"],
        reference_stderr=judged["reference_stderr"],
        direction=judged["direction"],
        rule=judged["rule"],
        metric=judged["metric"],
        unit=judged["unit"],
        reference_label=judged.get("reference_label") or "",
        # a failing test's report shows the check's explanation when its message is empty (see the collector)
        message=judged["message"] or (result.explain() if outcome == "failed" else ""),
        details=judged["details"],
        meta=pooled_meta(metas),
        duration=sum(r.duration for _, r in cells),
        seeds=seeds,
    )


def _seed_metas(record: ResultRecord) -> list[dict[str, Any]]:
    meta = {k: v for k, v in record.meta.items() if k not in (SEED_PARTS_KEY, "check_seconds")}
    return meta.pop("per_seed", None) or [meta]


def _nodeid(record: ResultRecord, seeds: list[int]) -> str:
    """The test id the run over all the seeds gives this test (the cell's, with its seeds' label replaced)."""
    old = f"-{record.scenario}-{_label(record.seeds or [])}"
    return record.nodeid.replace(old, f"-{record.scenario}-{_label(seeds)}")
