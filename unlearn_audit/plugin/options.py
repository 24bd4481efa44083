"""The plugin's command-line options as data (torch-free).

One table, read by `pytest_addoption` and by the documentation's options reference, so that the
help text and the docs cannot drift apart. `plugin.settings` converts and checks the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unlearn_audit.protocol import DEFAULT_BUDGET_FRACTION

GROUP = "unlearn-audit"
GROUP_DESCRIPTION = "audit machine-unlearning methods against data poisoning"


@dataclass(frozen=True)
class AuditOption:
    """One `--unlearner` / `--audit-*` option, as argparse takes it."""

    flag: str
    help: str
    default: Any = None
    metavar: str | None = None
    action: str | None = None
    #: What the default is when it is decided after parsing (argparse's own default is then None):
    #: shown in the documentation's default column, where "—" would read as "no default".
    shown_default: str | None = None

    def argparse_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"default": self.default, "help": self.help}
        if self.action is not None:
            kwargs["action"] = self.action
        if self.metavar is not None:
            kwargs["metavar"] = self.metavar
        return kwargs


OPTIONS: tuple[AuditOption, ...] = (
    AuditOption(
        "--unlearner",
        action="append",
        default=[],
        metavar="SPEC",
        help="unlearning method to audit: 'package.module:Attr' (class, instance, factory or function "
        "(model, request) -> model) or a name registered in the entry-point group "
        "'unlearn_audit.unlearners'. Repeatable. Without it the plugin does nothing.",
    ),
    AuditOption(
        "--audit-profile",
        default="tiny",
        metavar="NAME",
        help="fixture profile: data, model and scenarios (default: tiny, CPU, minutes).",
    ),
    AuditOption(
        "--audit-seeds",
        default="1",
        metavar="N|A-B|A,B,...",
        help="the seeds (fixtures and unlearner runs): N for seeds 0..N-1 (default: 1), a range A-B, or a list "
        "A,B,...; each test pools the evidence of all of them into one verdict.",
    ),
    AuditOption(
        "--audit-report",
        metavar="PATH",
        shown_default="no report",
        help="write the JSON audit report (scores, uncertainties, rules, metadata) to PATH.",
    ),
    AuditOption(
        "--audit-cache",
        metavar="DIR|URL",
        shown_default="$UNLEARN_AUDIT_CACHE, else the user cache dir",
        help="fixture cache directory (default: $UNLEARN_AUDIT_CACHE, else the platform user cache dir), or the "
        "fsspec URL of a cache shared between machines: s3://bucket/prefix (read-write, [s3] extra) or "
        "https://... / hf://... (read-only, [http] extra); a remote cache is mirrored into the local one.",
    ),
    AuditOption(
        "--audit-timeout",
        metavar="SECONDS",
        shown_default="10x the training time, at least 60",
        help="time limit of one unlearn() call (default: 10x the fixture's original training time, at least "
        "60 s); an unlearner over it fails its tests.",
    ),
    AuditOption(
        "--audit-budget",
        metavar="FRACTIONS",
        shown_default=f"{DEFAULT_BUDGET_FRACTION:g}",
        help=f"compute budget as a fraction of the original training (default: {DEFAULT_BUDGET_FRACTION:g}, as in "
        "Pawelczyk et al.); a comma-separated list (e.g. 0.02,0.04,0.1) runs each method at each budget.",
    ),
    AuditOption(
        "--audit-baseline",
        metavar="PATH",
        shown_default="no comparison",
        help="a previous --audit-report: fail a test when its score is significantly worse than the baseline's "
        "(one-sided z-test on the two scores and their standard errors).",
    ),
    AuditOption(
        "--audit-update-baseline",
        action="store_true",
        default=False,
        help="write this run's report to --audit-baseline instead of comparing with it (written whatever the "
        "verdicts; the exit status is still that of the checks: non-zero where one fails).",
    ),
    AuditOption(
        "--audit-threads",
        metavar="N",
        shown_default="1",
        help="torch CPU threads per process, xdist workers included (default: 1; the tiny models gain little "
        "from more, and oversubscribed cores slow torch down tenfold).",
    ),
    AuditOption(
        "--audit-shard",
        metavar="I/N",
        shown_default="every case",
        help="run only shard I of N of the audit cases (1 <= I <= N; all checks of one unlearner x scenario x "
        "budget stay together, with their seeds), e.g. one CI job each; join the shards' --audit-report "
        "files with `unlearn-audit merge`.",
    ),
    AuditOption(
        "--audit-device",
        metavar="DEVICE",
        shown_default="cuda if available, else cpu",
        help="torch device for unlearning and evaluation, and for building GPU-profile fixtures (default: cuda "
        "if available, else cpu). Plain 'cuda' under pytest-xdist: worker gwN uses cuda:N modulo the "
        "number of GPUs, so -n <number of GPUs> gives each worker its own GPU.",
    ),
    AuditOption(
        "--audit-isolation",
        default="process",
        metavar="MODE",
        help="'process' (default): each unlearner runs in its own worker process that sees only the request, "
        "is killed at the timeout, and whose crash fails only its own cases; 'inline': in the pytest "
        "process, for stepping through a method with a debugger.",
    ),
    AuditOption(
        "--audit-sandbox",
        default="on",
        metavar="on|off",
        help="'on' (default): each worker confines itself with Landlock before it imports the method (Linux "
        ">= 5.13): it reads only the interpreter, the import paths and system files, writes only its own "
        "directory, never reaches the fixture cache, and (by the kernel's Landlock ABI) cannot signal "
        "processes outside its sandbox or use TCP; where Landlock is missing the run goes on and the "
        "report says so. 'off': for debugging.",
    ),
    AuditOption(
        "--audit-allow-network",
        action="store_true",
        default=False,
        help="let a sandboxed worker bind and connect TCP sockets (refused by default).",
    ),
    AuditOption(
        "--audit-max-memory",
        metavar="SIZE",
        shown_default="no cap",
        help="cap the memory (address space) a worker may map beyond its start-up, e.g. 4G; a method that "
        "needs more fails its cases (CPU audits only; default: no cap).",
    ),
    AuditOption(
        "--audit-keep-seed-parts",
        action="store_true",
        default=False,
        help="also record each seed's unpooled results in the report's metadata, so that one-seed reports can "
        "be pooled afterwards (what `unlearn-audit calibrate --engine ray` runs).",
    ),
)


def add_options(parser: Any) -> None:
    """Register `OPTIONS` with pytest's parser (`pytest_addoption`)."""
    group = parser.getgroup(GROUP, GROUP_DESCRIPTION)
    for option in OPTIONS:
        group.addoption(option.flag, **option.argparse_kwargs())
