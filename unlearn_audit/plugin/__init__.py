"""The pytest plugin: `pytest --unlearner pkg.mod:Method` runs the conformance suite on a method.

Loaded by every pytest run in an environment where unlearn-audit is installed, so this module
imports neither torch nor anything heavy; without `--unlearner` it does nothing but add its
options. The heavy `AuditSession` is created on the first audit test.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from unlearn_audit.plugin.options import add_options
from unlearn_audit.plugin.case import AuditCase, AuditCaseParams
from unlearn_audit.plugin.settings import check_specs_inline, parse_settings, usage_error
from unlearn_audit.plugin.suite import CONFORMANCE_DIR
from unlearn_audit.plugin.state import (collector_key, fork_server_address_key, get_audit_session, prestarted_key, session_key,
                                        settings_key, spec_check_key)
from unlearn_audit.protocol import DEFAULT_BUDGET_FRACTION
from unlearn_audit.reports.record import CASE_PROPERTY

CHECK_MARKER = "audit_check"
FORK_SERVER_INPUT = "unlearn_audit_fork_server"  # xdist workerinput: the address of the controller's fork server


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{CHECK_MARKER}(name): a conformance test judging the named unlearn-audit check")
    if not config.getoption("unlearner", default=None):
        return
    settings = parse_settings(config)
    config.stash[settings_key] = settings
    if not hasattr(config, "workerinput"):  # xdist workers trust the controller's check
        _check_specs(config, settings)
    elif settings.isolation != "inline":  # an xdist worker: forks its workers from the controller's server
        from unlearn_audit.engine.worker import prepare_fork_server

        prepare_fork_server(address=config.workerinput.get(FORK_SERVER_INPUT))  # or starts its own
    # Run the conformance suite: alone when no paths were given, else beside the given paths.
    conformance = str(CONFORMANCE_DIR)
    if conformance not in config.args:
        explicit = config.args_source == pytest.Config.ArgsSource.ARGS
        config.args = [*config.args, conformance] if explicit else [conformance]
    # Under xdist, all checks of one (unlearner, scenario, seeds, budget) go to one worker so that
    # they share their unlearn() calls: see pytest_xdist_make_scheduler below.
    if not hasattr(config, "workerinput"):
        from unlearn_audit.reports.collector import ReportCollector

        config.stash[collector_key] = ReportCollector(options=settings.report_options())
        config.pluginmanager.register(_ReportHooks(config), "unlearn-audit-report")


def _check_specs(config: pytest.Config, settings: Any) -> None:
    """Resolve every spec before collection, so that a typo is one usage error.

    With process isolation the specs resolve in other processes, so this process never imports a
    method: in their worker processes (started in parallel, then kept for this process's audit), or,
    when the tests run elsewhere (xdist workers) or not at all (--collect-only), in one short-lived
    child for all specs. Under xdist that child is a fork of the run's fork server (which the xdist
    workers share, and are forks of themselves), asked for when the answer is wanted: in
    `pytest_sessionstart` on a cold cache, when the first worker has collected on a warm one.
    """
    if settings.isolation == "inline":
        check_specs_inline(settings.unlearners)
        return
    from unlearn_audit.engine.worker import (WorkerOptions, WorkerStartError, check_specs_in_child, prepare_fork_server,
                                             start_spec_check, start_workers)

    options = WorkerOptions(threads=settings.threads, max_memory=settings.max_memory, device=settings.device)
    distributed = getattr(config.option, "dist", "no") != "no"

    try:
        if config.option.collectonly:
            check_specs_in_child(settings.unlearners, options)
        elif distributed:  # one fork server for all xdist workers; it forks the spec check too
            address = prepare_fork_server(options, shared=True)
            if address is not None and _fork_xdist_workers(config, address):
                config.stash[fork_server_address_key] = address  # shared only with workers of this python
            config.stash[spec_check_key] = start_spec_check(settings.unlearners, options, fork=address is not None)
        else:
            config.stash[prestarted_key] = start_workers(settings.unlearners, options, _import_the_engine)
    except WorkerStartError as exc:
        raise usage_error(str(exc)) from None


def _fork_xdist_workers(config: pytest.Config, address: str) -> bool:
    """Start the xdist workers of `-n N` as forks of the run's fork server, through
    `unlearn_audit.engine.xdist_launcher` (each saves about 3 CPU-s of imports); whether it did.
    Worker specs that a user gave with `--tx` other than plain `popen` are left as they are (they may
    run another python, whose workers must not be forked from this one's server)."""
    tx = list(getattr(config.option, "tx", None) or [])
    if not tx or any(spec != "popen" for spec in tx):
        return False
    launcher = shlex.join([sys.executable, "-m", "unlearn_audit.engine.xdist_launcher", address])
    config.option.tx = [f"popen//python={launcher}"] * len(tx)
    return True


def _import_the_engine() -> None:
    """Import torch and the engine while worker or checker processes start: on two cores the imports
    overlap (~1.5 s saved)."""
    import unlearn_audit.engine.session  # noqa: F401


def _finish_spec_check(config: pytest.Config, import_engine: bool) -> None:
    """Collect the answer of the spec check that `_check_specs` prepared (xdist controller), importing the
    engine first if this process needs it (a spawned check imports meanwhile; a forked one is started
    here and costs only the methods' imports); a usage error for a spec that does not resolve."""
    checker = config.stash.get(spec_check_key, None)
    if checker is None:
        return
    del config.stash[spec_check_key]
    from unlearn_audit.engine.worker import WorkerStartError, finish_spec_check

    try:
        if import_engine:
            _import_the_engine()
    finally:
        try:
            finish_spec_check(checker, config.stash[settings_key].unlearners)
        except WorkerStartError as exc:
            raise usage_error(str(exc)) from None


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the worker processes (the session's, and any never handed to a session)."""
    if session_key in config.stash:
        config.stash[session_key].close()
    checker = config.stash.get(spec_check_key, None)
    if checker is not None:  # a run that ended before its session started
        checker.close()
    workers = config.stash.get(prestarted_key, None)
    if workers:
        from unlearn_audit.engine.worker import close_all

        close_all(workers)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Schedule audit cases by their parameter id, so that each case's checks share a worker.

    xdist's own `--dist loadgroup` relies on rewriting node ids, which pytest 9 no longer allows
    (xdist 3.8 writes `item._nodeid`, pytest 9 reads `item._id`), so we group by the id instead.
    Other tests (a user's own, run beside the suite) are scheduled one by one, as with `--dist load`.
    """
    if settings_key not in config.stash or config.getvalue("dist") not in ("load", "loadgroup"):
        return None
    from unlearn_audit.plugin.xdist_scheduling import AuditCaseScheduling

    return AuditCaseScheduling(config, log)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if settings_key not in config.stash and CONFORMANCE_DIR in (collection_path, *collection_path.parents):
        return True  # the conformance suite only runs with --unlearner
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(CHECK_MARKER)
    if marker is None or "audit_case" not in metafunc.fixturenames:
        return
    check = marker.args[0]
    settings = metafunc.config.stash.get(settings_key, None)
    if settings is None:
        return
    params = []
    for spec in settings.unlearners:
        for scenario, checks in settings.scenarios.items():
            if check not in checks:
                continue
            for budget in settings.budgets:
                case = AuditCaseParams(spec, settings.profile, scenario, settings.seeds, check, budget,
                                       show_budget=len(settings.budgets) > 1)
                params.append(pytest.param(case, id=case.id, marks=pytest.mark.xdist_group(case.group)))
    if not params:
        reason = f"no scenario of profile {settings.profile!r} applies check {check!r}"
        params = [pytest.param(None, id=f"{settings.profile}-not-applicable", marks=pytest.mark.skip(reason=reason))]
    metafunc.parametrize("audit_case", params, indirect=True)


def _case_of(item: pytest.Item) -> AuditCaseParams | None:
    case = getattr(getattr(item, "callspec", None), "params", {}).get("audit_case")
    return case if isinstance(case, AuditCaseParams) else None


def pytest_itemcollected(item: pytest.Item) -> None:
    """Carry the case's parameters with the test, so that its report is attributed even if it errors
    before it is judged (the report never parses them back out of the test id)."""
    case = _case_of(item)
    if case is not None:
        item.user_properties.append((CASE_PROPERTY, json.dumps(case.record())))


@pytest.fixture
def audit_case(request: pytest.FixtureRequest) -> AuditCase:
    """The (unlearner, scenario, seeds, check) this conformance test judges."""
    return AuditCase(request.param, request.config, request.node)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`--audit-shard i/n`: deselect the audit cases of the other shards."""
    settings = config.stash.get(settings_key, None)
    if settings is None or settings.shard is None:
        return
    from unlearn_audit.plugin.sharding import groups_in_shard

    cases = [(item, _case_of(item)) for item in items]
    keep = groups_in_shard([c.group for _, c in cases if c is not None], settings.shard)
    selected = [item for item, c in cases if c is None or c.group in keep]
    deselected = [item for item, c in cases if c is not None and c.group not in keep]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the fixtures the selected tests need before the first test, with visible progress.

    Under xdist the controller does not collect; it builds everything in `pytest_sessionstart`
    instead, and workers find the cache filled (the file lock covers any race).
    """
    config = session.config
    if settings_key not in config.stash or hasattr(config, "workerinput") or config.option.collectonly:
        return
    if getattr(config.option, "dist", "no") != "no":
        return
    needed = set()
    for item in session.items:
        case = _case_of(item)
        if case is not None:
            needed.update((case.scenario, seed) for seed in case.seeds)
    _build_fixtures(config, sorted(needed))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if settings_key not in config.stash or hasattr(config, "workerinput") or config.option.collectonly:
        return
    if getattr(config.option, "dist", "no") == "no":
        return
    settings = config.stash[settings_key]
    needed = [(sc, seed) for sc in settings.scenarios for seed in settings.seeds]
    from unlearn_audit.scenarios.prepared import references_ready

    if references_ready(settings.cache_dir, settings.profile, needed, settings.device, settings.threads or 1):
        # A warm cache: nothing to build or measure here, so the workers start now, without this
        # process importing torch; the spec check is collected once a worker has collected.
        return
    _finish_spec_check(config, import_engine=True)
    _build_fixtures(config, needed)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """The xdist controller tells each worker where its shared fork server listens."""
    address = node.config.stash.get(fork_server_address_key, None)
    if address is not None:
        node.workerinput[FORK_SERVER_INPUT] = address


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """The xdist controller: before any test is scheduled, a spec that does not resolve is a usage
    error (on a warm cache `pytest_sessionstart` leaves the spec check to here)."""
    _finish_spec_check(node.config, import_engine=False)


def _build_fixtures(config: pytest.Config, needed: list[tuple[str, int]]) -> None:
    if not needed:
        return
    from unlearn_audit.tools.progress import build_with_progress

    from unlearn_audit.errors import RecipeError, ResourceUnavailable

    capman = config.pluginmanager.getplugin("capturemanager")
    try:
        audit = get_audit_session(config)
    except RecipeError as exc:
        raise usage_error(str(exc)) from None
    try:
        if capman is not None:
            with capman.global_and_fixture_disabled():
                build_with_progress(audit, needed)
        else:
            build_with_progress(audit, needed)
    except ResourceUnavailable as exc:  # e.g. an optional extra, pretrained weights or a data set (text profiles)
        raise usage_error(f"cannot build the fixtures of profile {audit.options.profile!r}: {exc}") from None


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    settings = config.stash.get(settings_key, None)
    if settings is None:
        return None
    cache = settings.cache_dir or os.environ.get("UNLEARN_AUDIT_CACHE") or "(platform user cache dir)"
    return [
        f"unlearn-audit: profile {settings.profile}, seeds {list(settings.seeds)}, budgets {list(settings.budgets)}, "
        f"unlearners {list(settings.unlearners)}",
        f"unlearn-audit: fixture cache {cache}",
    ]


class _ReportHooks:
    """Controller-side hooks; registered as a separate plugin object so they see every report."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        collector = self.config.stash.get(collector_key, None)
        if collector is not None:
            collector.add(report)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        collector = self.config.stash.get(collector_key, None)
        if collector is None or not collector.results:
            return
        tr = terminalreporter
        tr.section("unlearn-audit")
        # A terminal gets its own width; a log file (CI) gets room for every column.
        isatty = bool(getattr(tr, "isatty", False))
        width = max(tr._tw.fullwidth, 120) if isatty else 170
        tr.write(collector.table(width=width, color=tr.hasmarkup))
        path = self.config.getoption("audit_report")
        if path:
            tr.write_line(f"unlearn-audit: JSON report written to {path}")
        settings = self.config.stash[settings_key]
        if settings.update_baseline:
            tr.write_line(f"unlearn-audit: baseline written to {settings.baseline}")
        elif settings.baseline:
            regressed = [r for r in collector.results.values() if (r.baseline or {}).get("regressed")]
            tr.write_line(f"unlearn-audit: compared with baseline {settings.baseline}: {len(regressed)} significant regression(s)")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        collector = self.config.stash.get(collector_key, None)
        if collector is None:
            return
        path = self.config.getoption("audit_report")
        if path:
            collector.write(Path(path))
        settings = self.config.stash[settings_key]
        if settings.update_baseline and settings.baseline and collector.results:
            collector.write(Path(settings.baseline))
