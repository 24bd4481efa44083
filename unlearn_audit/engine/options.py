"""The engine's one options record, and what the worker processes get from it (torch-free).

`AuditOptions` is what an audit session runs with; the plugin builds it once from the parsed
command line (`plugin.settings.AuditSettings`), and the worker processes' options are derived from
it here (`worker_options`), never copied field by field elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from unlearn_audit.protocol import DEFAULT_BUDGET_FRACTION

DATA_ENV = "UNLEARN_AUDIT_DATA"


@dataclass(frozen=True)
class WorkerOptions:
    """How an unlearner's worker process is started and confined."""

    threads: int | None = None  # torch CPU threads (default 1, as in the harness)
    max_memory: int | None = None  # bytes of address space; applied when the audit runs on the CPU
    device: str | None = None  # the audit device as requested (None: CUDA if available)
    sandbox: bool = True  # confine the worker with Landlock where the kernel has it (`engine.sandbox`)
    allow_network: bool = False  # let a confined worker bind and connect TCP sockets
    deny: tuple[str, ...] = ()  # folders the worker must never reach (the fixture cache, the data)


@dataclass(frozen=True)
class AuditOptions:
    profile: str = "tiny"
    cache_dir: Path | None = None
    remote_cache: str | None = None  # an fsspec URL (s3://bucket/prefix): the shared cache, mirrored under cache_dir
    budget_fraction: float = DEFAULT_BUDGET_FRACTION
    timeout: float | None = None  # None: derived from the fixture's training time
    device: str | None = None  # None: CUDA if available, else CPU
    isolation: str = "process"  # "process": each spec in its worker process; "inline": in this process
    max_memory: int | None = None  # bytes: cap of a CPU worker's address space (--audit-max-memory)
    threads: int | None = None  # torch CPU threads of a worker
    budgets_in_run: int = 1  # how many budgets the run audits (the family of exact-null tests grows with them)
    keep_seed_parts: bool = False  # record each seed's unpooled results (`checks.seed_parts`) in the metadata
    sandbox: bool = True  # `--audit-sandbox on|off`
    allow_network: bool = False  # `--audit-allow-network`

    def worker_options(self) -> WorkerOptions:
        """The worker processes' options, derived here so that no caller copies fields by hand."""
        return WorkerOptions(
            threads=self.threads,
            max_memory=self.max_memory,
            device=self.device,
            sandbox=self.sandbox,
            allow_network=self.allow_network,
            deny=harness_private_paths(self.cache_dir),
        )


def harness_private_paths(cache_dir: Path | None) -> tuple[str, ...]:
    """What a method's process must never read: the fixture cache (the reference models, the secrets,
    the test sets), wherever it is, and the data directory (the test split)."""
    from unlearn_audit.scenarios.cache import default_cache_dir

    paths = [Path(cache_dir) if cache_dir is not None else default_cache_dir()]
    data = os.environ.get(DATA_ENV)
    if data:
        paths.append(Path(data).expanduser())
    else:
        from platformdirs import user_data_dir

        paths.append(Path(user_data_dir("unlearn-audit", appauthor=False)))
    return tuple(str(p.expanduser().resolve()) for p in paths)
