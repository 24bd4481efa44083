"""The plugin's options, parsed once into a frozen, typed record (torch-free).

Every `--audit-*` option is converted and checked here, at configure time, so that a bad value
is one usage error before collection; the rest of the harness reads `AuditSettings` fields and
never the raw option strings.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from unlearn_audit.engine.devices import DEVICE_TYPES, check_device_name
from unlearn_audit.plugin.sharding import parse_shard
from unlearn_audit.protocol import DEFAULT_BUDGET_FRACTION
from unlearn_audit.scenarios.remote import is_remote, local_path


@dataclass(frozen=True)
class AuditSettings:
    unlearners: tuple[str, ...]
    profile: str
    scenarios: dict[str, tuple[str, ...]]  # scenario -> the checks its recipe lists
    seeds: tuple[int, ...]
    budgets: tuple[float, ...] = (DEFAULT_BUDGET_FRACTION,)
    threads: int | None = None
    timeout: float | None = None
    device: str | None = None
    cache_dir: str | None = None  # a local directory, or an fsspec URL of a shared cache (s3://...)
    baseline: str | None = None
    update_baseline: bool = False
    shard: tuple[int, int] | None = None  # (i, n): run shard i of n (`--audit-shard i/n`)
    isolation: str = "process"  # "process" (each spec in its own worker process) or "inline"
    max_memory: int | None = None  # bytes of a CPU worker's address space (`--audit-max-memory`)
    keep_seed_parts: bool = False  # each seed's unpooled results in the report (`--audit-keep-seed-parts`)
    sandbox: bool = True  # `--audit-sandbox on|off`: Landlock for the workers
    allow_network: bool = False  # `--audit-allow-network`

    @property
    def compare_with_baseline(self) -> bool:
        return bool(self.baseline) and not self.update_baseline

    def report_options(self) -> dict[str, Any]:
        """The options as the JSON report records them."""
        out = asdict(self)
        del out["scenarios"]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


ISOLATION_MODES = ("process", "inline")


def usage_error(message: str) -> pytest.UsageError:
    return pytest.UsageError(f"unlearn-audit: {message}")


DEVICE_REQUIREMENT = f"a torch device ({', '.join(DEVICE_TYPES)}), or one with an index such as cuda:1"


def _option(
    config: pytest.Config, name: str, convert: Callable[[str], Any], valid: Callable[[Any], bool], requirement: str
) -> Any:
    """The converted option value (None when unset), or a usage error that says what was expected."""
    text = config.getoption(name)
    if text is None:
        return None
    try:
        value = convert(text)
        if not valid(value):
            raise ValueError
    except ValueError:
        raise usage_error(f"--{name.replace('_', '-')} must be {requirement}, got {text!r}") from None
    return value


def parse_seeds(text: str) -> tuple[int, ...]:
    """`5` -> seeds 0..4; `10-19` -> seeds 10..19; `3,7,11` -> those seeds (a ValueError otherwise)."""
    text = text.strip()
    if "," in text:
        seeds = tuple(int(s) for s in text.split(","))
    elif "-" in text.lstrip("-"):
        first, _, last = text.partition("-")
        seeds = tuple(range(int(first), int(last) + 1))
    else:
        seeds = tuple(range(int(text)))
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(text)
    return seeds


def _fractions(text: str) -> tuple[float, ...]:
    return tuple(float(b) for b in text.split(","))


def parse_settings(config: pytest.Config) -> AuditSettings:
    """Check every option and return the typed settings (a usage error names the first bad one)."""
    from unlearn_audit.engine.worker import parse_memory
    from unlearn_audit.scenarios.recipes import load_profile_recipes, profile_names

    specs = tuple(s.strip() for s in config.getoption("unlearner"))
    if len(set(specs)) != len(specs):
        raise usage_error(f"--unlearner given twice for the same spec: {list(specs)}")
    profile = config.getoption("audit_profile")
    try:
        recipes = load_profile_recipes(profile)
    except KeyError:
        raise usage_error(f"unknown --audit-profile {profile!r}; available: {', '.join(profile_names())}") from None
    seeds = _option(
        config,
        "audit_seeds",
        parse_seeds,
        lambda s: True,
        "a positive number of seeds N (seeds 0..N-1), a range A-B or a list A,B,... of distinct seeds >= 0",
    )
    budgets = _option(
        config,
        "audit_budget",
        _fractions,
        lambda bs: bs and all(0 < b <= 1 for b in bs) and len(set(bs)) == len(bs),
        "distinct fractions in (0, 1], comma-separated",
    )
    timeout = _option(config, "audit_timeout", float, lambda t: t > 0, "a positive number of seconds")
    threads = _option(config, "audit_threads", int, lambda n: n >= 1, "a positive integer")
    baseline = config.getoption("audit_baseline")
    update_baseline = bool(config.getoption("audit_update_baseline"))
    if update_baseline and not baseline:
        raise usage_error("--audit-update-baseline needs --audit-baseline PATH (where to write the new baseline)")
    if baseline and not update_baseline:
        from unlearn_audit.reports.baseline import BaselineError, load_baseline

        try:
            load_baseline(Path(baseline))
        except BaselineError as exc:
            raise usage_error(str(exc)) from None
    shard = _option(config, "audit_shard", parse_shard, lambda s: True, "I/N with 1 <= I <= N (e.g. 2/4)")
    cache = config.getoption("audit_cache")
    isolation = config.getoption("audit_isolation")
    if isolation not in ISOLATION_MODES:
        raise usage_error(f"--audit-isolation must be one of {', '.join(ISOLATION_MODES)}, got {isolation!r}")
    if isolation == "process" and os.name != "posix":
        raise usage_error(
            "process isolation needs a POSIX system (process groups, select on pipes); "
            "use --audit-isolation inline here"
        )
    max_memory = _option(
        config,
        "audit_max_memory",
        parse_memory,
        lambda b: b >= 2**27,
        "a memory size of at least 128M, e.g. 4G or 512M",
    )
    sandbox = str(config.getoption("audit_sandbox")).strip().lower()
    if sandbox not in ("on", "off"):
        raise usage_error(f"--audit-sandbox must be on or off, got {sandbox!r}")
    if max_memory and isolation == "inline":
        raise usage_error("--audit-max-memory caps a worker process; it cannot apply with --audit-isolation inline")
    device = _option(config, "audit_device", check_device_name, lambda d: True, DEVICE_REQUIREMENT)
    if device and device.partition(":")[0] != "cpu":  # asking torch costs its import: not for the CPU
        from unlearn_audit.engine.usable_device import check_device_usable
        from unlearn_audit.errors import UnusableDevice

        try:
            check_device_usable(device)
        except UnusableDevice as exc:
            raise usage_error(str(exc)) from None
    return AuditSettings(
        unlearners=specs,
        profile=profile,
        scenarios={name: tuple(r.checks) for name, r in recipes.items()},
        seeds=seeds,
        budgets=budgets or (DEFAULT_BUDGET_FRACTION,),
        threads=threads,
        timeout=timeout,
        device=device,
        cache_dir=(cache if is_remote(cache) else str(local_path(cache).resolve())) if cache else None,
        baseline=str(Path(baseline).expanduser().resolve()) if baseline else None,
        update_baseline=update_baseline,
        shard=shard,
        isolation=isolation,
        max_memory=max_memory,
        keep_seed_parts=bool(config.getoption("audit_keep_seed_parts")),
        sandbox=sandbox == "on",
        allow_network=bool(config.getoption("audit_allow_network")),
    )


def check_specs_inline(specs: tuple[str, ...]) -> None:
    """`--audit-isolation inline`: import each spec here; a usage error names the first bad one."""
    from unlearn_audit.engine.counting import wrap_torch_transforms
    from unlearn_audit.engine.specs import SpecError, check_spec

    wrap_torch_transforms()  # before the methods' modules are imported: `from torch.func import vmap` counts
    for spec in specs:
        try:
            check_spec(spec)
        except SpecError as exc:
            raise usage_error(str(exc)) from None
