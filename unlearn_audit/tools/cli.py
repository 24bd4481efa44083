"""`unlearn-audit` console script: manage the fixture cache, calibrate the suite.

unlearn-audit fixtures build  [--profile tiny] [--seeds N] [--scenario NAME ...] [--cache DIR] [--device D]
unlearn-audit fixtures list   [--cache DIR]
unlearn-audit fixtures verify [--cache DIR]
unlearn-audit fixtures clean  [--profile NAME] [--cache DIR]
unlearn-audit fixtures pack ARCHIVE [--profile P] [--scenario S ...] [--seed N ...] [--measurements] [--cache DIR]
unlearn-audit fixtures unpack ARCHIVE [--cache DIR]
unlearn-audit calibrate       [--profile tiny] [--seeds N|A-B] [--methods ...] [-k EXPR] [--out DIR]
                              [--engine local|ray [--address ADDR]] [--cache DIR|URL] [--from-report REPORT]
unlearn-audit compare OLD.json NEW.json
unlearn-audit diff OLD.json NEW.json [--ignore DETAIL_KEY ...]
unlearn-audit merge SHARD.json ... --out REPORT.json
unlearn-audit plot REPORT.json [--out DIR]
unlearn-audit data import cifar10 PATH [--data-dir DIR] [--allow-partial]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from unlearn_audit.tools.consoles import output_console

if TYPE_CHECKING:
    from unlearn_audit.scenarios.cache import FixtureCache


def _add_cache(p: argparse.ArgumentParser, remote: bool = False) -> None:
    """`--cache`, kept as the text given: a `Path` would turn `s3://b/p` into the local folder `s3:/b/p`."""
    where = (
        "fixture cache: a directory, or a URL as --audit-cache takes it (s3://..., http(s)://...)"
        if remote
        else "local fixture cache directory"
    )
    p.add_argument(
        "--cache",
        default=None,
        help=f"{where} (default: $UNLEARN_AUDIT_CACHE, else the platform user cache dir)",
    )


def local_cache(location: str | None, action: str) -> FixtureCache:
    """The local cache `fixtures <action>` works on; a URL is refused (it would be read as a folder named
    `s3:/...`): these commands read and write files on this machine's disk only."""
    from unlearn_audit.scenarios.cache import FixtureCache
    from unlearn_audit.scenarios.remote import is_remote, local_path

    if is_remote(location):
        raise CacheLocationError(
            f"unlearn-audit fixtures {action}: --cache {location} is a URL, but this command works on a local "
            "cache directory only. Give --cache a local directory; to use the fixtures of a remote cache, "
            "pass the URL to the audit (pytest --audit-cache URL)"
            + (
                "."
                if action in ("pack", "unpack")
                else ", or copy them here with `unlearn-audit fixtures pack` on a machine that has them and "
                "`unlearn-audit fixtures unpack` here."
            )
        )
    return FixtureCache(local_path(location) if location else None)


class CacheLocationError(ValueError):
    """A --cache a command cannot use; the message says what to give instead."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unlearn-audit",
        description="Audit machine-unlearning methods against data poisoning. "
        "Run audits with `pytest --unlearner pkg.mod:Method`; this command builds and moves fixtures, "
        "calibrates the suite, and reads, compares, merges and plots its JSON reports.",
    )
    from unlearn_audit import __version__

    parser.add_argument("--version", action="version", version=f"unlearn-audit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    fx = sub.add_parser(
        "fixtures",
        help="build, list, verify or clean the cached poisoned fixture models, or pack them into an archive and "
        "unpack it on another machine (a local cache only)",
    )
    fsub = fx.add_subparsers(dest="action", required=True)
    b = fsub.add_parser("build", help="build (or find) the fixtures of a profile")
    b.add_argument("--profile", default="tiny", help="the profile whose fixtures to build (default tiny)")
    b.add_argument(
        "--seeds",
        type=_seeds,
        default="1",
        help="N (seeds 0..N-1), a range A-B or a list A,B,... as --audit-seeds takes it (default 1)",
    )
    b.add_argument("--scenario", action="append", default=None, help="only this scenario (repeatable)")
    b.add_argument(
        "--device", default=None, help="device for GPU-profile builds (default: cuda if available, else cpu)"
    )
    _add_cache(b)
    for name, text in (
        ("list", "list cached fixtures"),
        ("verify", "check every cached fixture against its checksums"),
    ):
        _add_cache(fsub.add_parser(name, help=text))
    c = fsub.add_parser("clean", help="delete cached fixtures")
    c.add_argument("--profile", default=None, help="only this profile")
    _add_cache(c)
    pk = fsub.add_parser(
        "pack",
        help="write built fixtures into one verified archive (to move them to a machine that should not build them)",
    )
    pk.add_argument("archive", type=Path, help="the archive to write (.tar, or .tar.gz to compress)")
    pk.add_argument("--profile", default=None, help="only this profile")
    pk.add_argument("--scenario", action="append", default=None, help="only this scenario (repeatable)")
    pk.add_argument("--seed", type=int, action="append", default=None, help="only this seed (repeatable)")
    pk.add_argument(
        "--measurements",
        action="store_true",
        help="also the stored reference measurements (reused only where torch, the device and "
        "unlearn-audit are the same)",
    )
    _add_cache(pk)
    up = fsub.add_parser(
        "unpack", help="verify an archive written by `fixtures pack` and add its fixtures to the cache"
    )
    up.add_argument("archive", type=Path, help="the archive `fixtures pack` wrote")
    _add_cache(up)
    cal = sub.add_parser("calibrate", help="run the suite for the reference methods over seeds and tabulate pass rates")
    cal.add_argument(
        "--profile",
        default=None,
        help="the profile to calibrate (default tiny; with --from-report, the report's own, which it may only repeat)",
    )
    cal.add_argument(
        "--seeds",
        type=_seeds,
        default="3",
        help="N (seeds 0..N-1), a range A-B or a list A,B,... (default 3); the tests pool them, and each "
        "seed's own verdicts give the one-seed tables",
    )
    cal.add_argument(
        "--methods",
        nargs="*",
        default=None,
        help="method names in unlearn_audit.methods, or full specs (default: all the reference methods, "
        "unlearn_audit.tools.calibrate.REFERENCE_METHODS)",
    )
    cal.add_argument(
        "--out",
        default="calibration",
        help="directory for calibration-<profile>.json (the sweep's report), calibration-<profile>.md (the tables) "
        "and calibration-<profile>.summary.json, replacing earlier ones of the profile (default: calibration)",
    )
    cal.add_argument("--workers", type=int, default=None, help="pytest-xdist workers (-n) of the local engine")
    cal.add_argument(
        "-k",
        dest="select",
        default=None,
        metavar="EXPR",
        help="only the tests pytest's -k EXPR selects (e.g. 'tiny-gaussian-' for one scenario)",
    )
    cal.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: one pytest run here; ray: one Ray task per (method, seed) on a Ray cluster, pooled "
        "into the same report (needs the [ray] extra)",
    )
    cal.add_argument(
        "--address",
        default=None,
        help="the Ray cluster to use (ray.init(address=...)); default: $RAY_ADDRESS, else a local one",
    )
    cal.add_argument(
        "--gpus-per-cell",
        type=float,
        default=None,
        help="GPUs a Ray cell asks for (default: 1 on a profile whose recipes train on the GPU, else 0)",
    )
    cal.add_argument(
        "--from-report",
        default=None,
        metavar="REPORT",
        help="run nothing: tabulate an existing JSON report into --out (calibration-<profile>.md and "
        ".summary.json, <profile> being the report's)",
    )
    _add_cache(cal, remote=True)
    plot = sub.add_parser("plot", help="draw the curves of a JSON report into PNG files (needs the [plot] extra)")
    plot.add_argument("report", type=Path, help="a JSON report (--audit-report)")
    plot.add_argument(
        "--out", type=Path, default=None, help="output directory (default: <report stem>-plots/ next to it)"
    )
    cmp = sub.add_parser(
        "compare",
        help="compare two JSON reports; exit 1 if the new one has a significant regression, 2 if a file is "
        "missing or not a report",
    )
    cmp.add_argument("old", type=Path, help="the baseline JSON report")
    cmp.add_argument("new", type=Path, help="the JSON report to judge against it")
    d = sub.add_parser(
        "diff",
        help="list every difference between two JSON reports (verdicts, scores, details); exit 1 if there is "
        "one, 2 if a file is not a report",
    )
    d.add_argument("old", type=Path, help="a JSON report")
    d.add_argument("new", type=Path, help="the JSON report to list the differences of")
    d.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="KEY",
        help="a details key to leave out (repeatable); timings are always left out",
    )
    m = sub.add_parser(
        "merge",
        help="join the --audit-report files of the shards of one audit (--audit-shard i/n); "
        "exit 1 if any test failed or errored, as the unsharded run would",
    )
    m.add_argument("reports", type=Path, nargs="+", help="the shards' JSON reports")
    m.add_argument("--out", type=Path, required=True, help="where to write the merged report")
    sub.add_parser(
        "deviations", help="print the table of where each profile differs from the papers (from the recipes)"
    )
    from unlearn_audit.tools.import_data import add_parser as add_data_parser

    add_data_parser(sub)
    return parser


def _seeds(text: str) -> str:
    """`--seeds` as `--audit-seeds` takes it (checked here, so that a typo fails before the suite starts)."""
    from unlearn_audit.plugin.settings import parse_seeds

    try:
        parse_seeds(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N, A-B or A,B,... (distinct seeds >= 0), got {text!r}") from None
    return text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = output_console()
    if args.command == "plot":
        from unlearn_audit.tools.plot import main as plot_main

        return plot_main(args)
    if args.command == "compare":
        return compare_main(args, console)
    if args.command == "diff":
        return diff_main(args, console)
    if args.command == "merge":
        return merge_main(args, console)
    if args.command == "data":
        from unlearn_audit.tools.import_data import main as data_main

        return data_main(args)
    if args.command == "deviations":
        from unlearn_audit.tools.deviations import main as deviations_main

        return deviations_main(args)
    if args.command == "calibrate":
        if args.engine != "ray" and (args.address or args.gpus_per_cell is not None):
            console.print("unlearn-audit calibrate: --address and --gpus-per-cell need --engine ray", markup=False)
            return 2
        if args.engine == "ray" and args.workers:
            console.print(
                "unlearn-audit calibrate: --workers is the local engine's; Ray runs one task per "
                "(method, seed) on the cluster's cores",
                markup=False,
            )
            return 2
        from unlearn_audit.tools.calibrate import main as calibrate_main

        return calibrate_main(args)
    try:
        cache = local_cache(args.cache, args.action)
    except CacheLocationError as exc:
        console.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
        return 2
    if args.action == "build":
        from unlearn_audit.engine.session import AuditOptions, AuditSession, configure_threads
        from unlearn_audit.scenarios.recipes import load_profile_recipes, profile_names
        from unlearn_audit.tools.progress import build_with_progress

        configure_threads(None)
        try:
            recipes = load_profile_recipes(args.profile)
        except KeyError:
            console.print(f"[red]unknown profile {args.profile!r}[/]; available: {', '.join(profile_names())}")
            return 2
        scenarios = args.scenario or list(recipes)
        unknown = sorted(set(scenarios) - set(recipes))
        if unknown:
            console.print(f"[red]unknown scenario(s) {unknown}[/] (known: {sorted(recipes)})")
            return 2
        from unlearn_audit.plugin.settings import parse_seeds

        seeds = parse_seeds(args.seeds)
        audit = AuditSession(AuditOptions(profile=args.profile, cache_dir=cache.root, device=args.device))
        from unlearn_audit.errors import ResourceUnavailable

        try:
            build_with_progress(audit, [(s, seed) for s in scenarios for seed in seeds])
        except ResourceUnavailable as exc:  # a data set, weights or an optional extra: the message says what to do
            console.print(str(exc), style="red", markup=False)  # the message holds "[cifar]"
            return 2
        for s in scenarios:
            for seed in seeds:
                f = audit.fixture(s, seed)
                v = f.meta.get("validation", {})
                ok = (
                    "[green]attack effective[/]"
                    if v.get("effective")
                    else f"[red]ATTACK NOT EFFECTIVE[/] ({v.get('rule')})"
                )
                builds = f.meta.get("build_attempts")
                rebuilt = f" (build {len(builds)}, build seed {f.meta.get('build_seed')})" if builds else ""
                console.print(
                    f"{args.profile}/{s} seed {seed}: {f.path.name}  "
                    f"original acc {v.get('original_test_accuracy', 0):.3f}, "
                    f"retrain acc {v.get('retrain_test_accuracy', 0):.3f}, {ok}{rebuilt}"
                )
        return 0
    if args.action == "list":
        entries = cache.entries()
        table = Table(title=f"fixtures in {cache.root}")
        from unlearn_audit.scenarios.provenance import built_with, fixture_id

        columns = ("profile", "scenario", "seed", "key", "fixture id", "built", "built with", "build s", "builds")
        for col in (*columns, "attack works"):
            table.add_column(col, no_wrap=col in ("scenario", "built"))
        for e in entries:
            m = e.meta
            table.add_row(
                str(m.get("profile")),
                str(m.get("scenario")),
                str(m.get("seed")),
                str(m.get("recipe_hash", ""))[:16],
                str(fixture_id(m)),
                str(m.get("created", "")).replace("T", " ")[:16],
                built_with(m),
                f"{m.get('build_seconds', 0):.1f}",
                str(len(m.get("build_attempts", [])) or 1),
                str(m.get("validation", {}).get("effective")),
            )
        console.print(table if entries else f"no fixtures in {cache.root}")
        shared = cache.shared_models.entries()
        if shared:
            models = Table(title="models shared by the builds of several seeds")
            for col in ("profile", "model", "key", "train s", "device"):
                models.add_column(col, no_wrap=col == "model")
            for path, m in shared:
                models.add_row(
                    path.parent.parent.name,
                    str(m.get("spec", {}).get("name")),
                    str(m.get("key", ""))[:12],
                    f"{m.get('train_seconds', 0):.1f}",
                    str(m.get("device")),
                )
            console.print(models)
        return 0
    if args.action == "verify":
        checked = [(e.label, e.path, cache.verify_path(e.path)) for e in cache.entries()]
        checked += [
            (f"shared model {m.get('spec', {}).get('name')}", path, cache.shared_models.problems(path))
            for path, m in cache.shared_models.entries()
        ]
        bad = 0
        for label, path, problems in checked:
            bad += bool(problems)
            console.print(f"[{'red' if problems else 'green'}]{'CORRUPT' if problems else 'ok'}[/] {label}: {path}")
            for p in problems:
                console.print(f"    {p}")
        console.print(f"{len(checked) - bad} intact, {bad} corrupt")
        if bad:
            console.print(_rebuild_advice(cache), markup=False, highlight=False, soft_wrap=True)
        return 1 if bad else 0
    if args.action == "clean":
        if args.profile is not None and not _profile_to_clean(cache, args.profile):
            from unlearn_audit.scenarios.recipes import profile_names

            console.print(
                f"unlearn-audit fixtures clean: unknown profile {args.profile!r} "
                f"(known: {', '.join(profile_names())}); nothing removed from {cache.root}",
                style="red",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            return 2
        shared_count = len(cache.shared_models.entries(args.profile))
        n = cache.clean(args.profile)
        console.print(
            f"removed {n} fixture(s)"
            + (f" and {shared_count} shared model(s)" if shared_count else "")
            + f" from {cache.root}"
        )
        return 0
    if args.action in ("pack", "unpack"):
        return pack_main(args, cache, console)
    return 2


def _rebuild_advice(cache: FixtureCache) -> str:
    """What to do about corrupt entries: nothing drastic. An audit (or `fixtures build`) that needs a corrupt
    fixture or shared model moves it aside with a warning and builds it again, so wiping the whole cache
    (`fixtures clean`) would only throw the intact ones away."""
    commands = sorted(
        {
            f"unlearn-audit fixtures build --cache {cache.root} --profile {e.meta['profile']} "
            f"--scenario {e.meta['scenario']} --seeds {e.meta['seed']}-{e.meta['seed']}"
            for e in cache.entries()
            if {"profile", "scenario", "seed"} <= set(e.meta) and cache.verify_path(e.path)
        }
    )
    advice = "the next audit that needs a corrupt entry rebuilds it by itself (with a warning)"
    return "\n    ".join([f"{advice}; to rebuild now:", *commands]) if commands else advice


def _profile_to_clean(cache: FixtureCache, profile: str) -> bool:
    """Whether `fixtures clean --profile` names a profile: a known one, or one the cache holds (built by another
    version). A typo is refused rather than reported as "removed 0 fixture(s)"."""
    from unlearn_audit.scenarios.recipes import profile_names

    return profile in profile_names() or (cache.root / profile).is_dir()


def pack_main(args: argparse.Namespace, cache: FixtureCache, console: Console) -> int:
    from unlearn_audit.scenarios.pack import PackError, pack, select_entries, unpack

    def say(text: str) -> None:
        console.print(f"unlearn-audit: {text}", markup=False, highlight=False)

    try:
        if args.action == "pack":
            entries = select_entries(cache, profile=args.profile, scenarios=args.scenario, seeds=args.seed)
            packed = pack(cache, args.archive, entries, with_measurements=args.measurements, progress=say)
            say(f"wrote {len(packed)} fixture(s) to {args.archive} ({args.archive.stat().st_size / 2**20:.1f} MiB)")
            return 0
        if not args.archive.is_file():
            say(f"no such archive: {args.archive}")
            return 2
        result = unpack(args.archive, cache, progress=say)
    except PackError as exc:
        say(f"error: {exc}")
        return 1
    say(
        f"{cache.root}: {len(result.added)} added, {len(result.replaced)} replaced (were corrupt or incomplete), "
        f"{len(result.kept)} already there"
    )
    return 0


def diff_main(args: argparse.Namespace, console: Console) -> int:
    from unlearn_audit.reports.diff import ReportError, diff_reports

    try:
        lines = diff_reports(args.old, args.new, tuple(args.ignore))
    except ReportError as exc:
        console.print(f"unlearn-audit diff: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(f"{len(lines)} difference(s)")
    return 1 if lines else 0


def merge_main(args: argparse.Namespace, console: Console) -> int:
    from unlearn_audit.reports.collector import write_report
    from unlearn_audit.reports.merge import MergeError, merge_reports

    try:
        merged = merge_reports(args.reports)
    except MergeError as exc:
        console.print(f"unlearn-audit merge: {exc}", markup=False, highlight=False)
        return 2
    write_report(merged, args.out)
    for line in merged.get("fixtures_of_several_builds", []):
        console.print(
            f"warning: the shards measured {line}: give the jobs one shared --audit-cache, or unpack one "
            "`unlearn-audit fixtures pack` in each, so that every result is measured on the same build",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    outcomes = [r["outcome"] for r in merged["results"]]
    bad = sum(o in ("failed", "error") for o in outcomes)
    console.print(
        f"merged {len(args.reports)} report(s), {len(outcomes)} results ({bad} failed or errored) into {args.out}",
        markup=False,
        highlight=False,
    )
    return 1 if bad else 0


def compare_main(args: argparse.Namespace, console: Console) -> int:
    from unlearn_audit.reports.baseline import BaselineError, compare_reports, other_fixture_summary

    try:
        rows = compare_reports(args.old, args.new)
    except BaselineError as exc:
        console.print(f"unlearn-audit compare: {exc}", style="red", markup=False, highlight=False, soft_wrap=True)
        return 2
    table = Table(title=f"{args.old} -> {args.new}")
    for col in ("unlearner", "check", "scenario", "seeds", "budget", "old", "new", "z", "status"):
        table.add_column(col)
    colour = {"regressed": "red", "improved": "green", "missing": "yellow", "new": "yellow", "other fixture": "yellow"}

    def fmt(v, se):  # noqa: ANN001
        return "" if v is None else (f"{v:.3f} ± {se:.3f}" if se else f"{v:.4g}")

    for r in rows:
        z = r.get("z")
        table.add_row(
            str(r["unlearner"]).rpartition(":")[2],
            str(r["check"]),
            str(r["scenario"]),
            ",".join(map(str, r["seeds"])) if r.get("seeds") else "",
            f"{r['budget']:g}" if r.get("budget") is not None else "",
            fmt(r.get("baseline_score"), r.get("baseline_stderr")),
            fmt(r.get("new_score"), r.get("new_stderr")),
            "" if z is None or z != z else f"{z:.2f}",
            f"[{colour.get(r['status'], 'white')}]{r['status']}[/]",
        )
    console.print(table)
    regressed = sum(1 for r in rows if r.get("regressed"))
    console.print(f"{regressed} significant regression(s) (one-sided z-test at alpha 0.01 per result)")
    changes = [r["fixture"] for r in rows if r.get("status") == "other fixture"]
    if changes:
        console.print(other_fixture_summary(changes, len(rows)), markup=False, highlight=False, soft_wrap=True)
    return 1 if regressed else 0


if __name__ == "__main__":
    sys.exit(main())
