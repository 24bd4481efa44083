"""One audit run inside pytest: the object that does what the plugin's hooks ask (torch-free to import).

Created in `pytest_configure` when `--unlearner` is given and registered as a pytest plugin, so its
`pytest_*` methods are hooks; each says in a few lines what it does for this run's role, which is
decided once (see `Role`). It owns the parsed settings, the spec check, the worker processes started
with it, the heavy `AuditSession` (created on first use: it imports torch) and the report.
"""

from __future__ import annotations

import enum
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from unlearn_audit.engine.options import AuditOptions
from unlearn_audit.plugin.case import AuditCaseParams, case_of
from unlearn_audit.plugin.settings import AuditSettings, check_specs_inline, parse_settings, usage_error
from unlearn_audit.plugin.suite import CONFORMANCE_DIR
from unlearn_audit.reports.record import CASE_PROPERTY, builders, builds_measured_on
from unlearn_audit.scenarios.remote import RemoteCacheError, is_remote

if TYPE_CHECKING:
    from unlearn_audit.engine.session import AuditSession
    from unlearn_audit.engine.worker import SpecCheck, UnlearnerWorker
    from unlearn_audit.reports.collector import ReportCollector

CHECK_MARKER = "audit_check"


class Role(enum.Enum):
    """What this pytest process does in the run."""

    SERIAL = "serial"  # collects, runs and reports every test itself
    CONTROLLER = "controller"  # pytest-xdist's controller: builds fixtures, schedules, reports; runs no test
    WORKER = "worker"  # a pytest-xdist worker: runs the tests the controller sends; reports nothing itself
    COLLECT_ONLY = "collect-only"  # --collect-only: checks the specs and lists the cases

    @classmethod
    def of(cls, config: pytest.Config) -> Role:
        if hasattr(config, "workerinput"):
            return cls.WORKER
        if config.option.collectonly:
            return cls.COLLECT_ONLY
        if getattr(config.option, "dist", "no") != "no":
            return cls.CONTROLLER
        return cls.SERIAL


class AuditRun:
    def __init__(self, config: pytest.Config, settings: AuditSettings) -> None:
        self.config = config
        self.settings = settings
        self.role = Role.of(config)
        self.collector: ReportCollector | None = None
        self._session: AuditSession | None = None
        self._spec_check: SpecCheck | None = None
        self._started: dict[str, UnlearnerWorker] = {}  # workers that resolved the specs at start-up

    @classmethod
    def start(cls, config: pytest.Config) -> AuditRun:
        """Parse and check the options and the specs (a usage error for the first bad one); aim pytest
        at the conformance suite."""
        run = cls(config, parse_settings(config))
        run._check_specs()
        conformance = str(CONFORMANCE_DIR)  # alone when no paths were given, else beside them
        if conformance not in config.args:
            explicit = config.args_source == pytest.Config.ArgsSource.ARGS
            config.args = [*config.args, conformance] if explicit else [conformance]
        if run.role is not Role.WORKER:
            from unlearn_audit.reports.collector import ReportCollector

            run.collector = ReportCollector(options=run.settings.report_options())
        return run

    # -- the specs ---------------------------------------------------------------------------
    def _check_specs(self) -> None:
        """Resolve every spec before collection, so that a typo is one usage error.

        With process isolation this process never imports a method: the specs resolve in the workers
        that will run them (serial: started now, in parallel with this process's torch import), or in
        one short-lived process for all of them when the tests run elsewhere (xdist) or not at all
        (--collect-only). An xdist worker trusts its controller.
        """
        if self.role is Role.WORKER:
            return
        if self.settings.isolation == "inline":
            check_specs_inline(self.settings.unlearners)
            return
        from unlearn_audit.engine.worker import SpecCheck, WorkerStartError, start_workers

        options = self.worker_options()
        try:
            if self.role is Role.SERIAL:
                self._started = start_workers(self.settings.unlearners, options, _import_the_engine)
            else:
                self._spec_check = SpecCheck(self.settings.unlearners, options)
                if self.role is Role.COLLECT_ONLY:
                    self._finish_spec_check()
        except WorkerStartError as exc:
            raise usage_error(str(exc)) from None

    def _finish_spec_check(self) -> None:
        check, self._spec_check = self._spec_check, None
        if check is None:
            return
        from unlearn_audit.engine.worker import WorkerStartError

        try:
            check.finish()
        except WorkerStartError as exc:
            raise usage_error(str(exc)) from None

    def worker_options(self) -> Any:
        """The worker processes' options, from the run's one options record."""
        return self.options.worker_options()

    @property
    def options(self) -> AuditOptions:
        """The engine's options, made from the settings here and nowhere else."""
        s = self.settings
        remote = s.cache_dir is not None and is_remote(s.cache_dir)
        return AuditOptions(
            profile=s.profile,
            cache_dir=Path(s.cache_dir) if s.cache_dir and not remote else None,
            remote_cache=s.cache_dir if remote else None,
            timeout=s.timeout,
            device=s.device,
            isolation=s.isolation,
            max_memory=s.max_memory,
            threads=s.threads,
            budgets_in_run=len(s.budgets),
            keep_seed_parts=s.keep_seed_parts,
            sandbox=s.sandbox,
            allow_network=s.allow_network,
        )

    # -- the heavy session -------------------------------------------------------------------
    @property
    def session(self) -> AuditSession:
        """The run's single AuditSession (created on first use; imports torch)."""
        if self._session is None:
            from unlearn_audit.engine.session import AuditSession, configure_threads

            configure_threads(self.settings.threads)
            self._session = AuditSession(self.options)
            self._session.workers.update(self._started)  # no second start for the spec check's workers
            self._started = {}
        return self._session

    def close(self) -> None:
        """Stop every process this run started."""
        if self._session is not None:
            self._session.close()
        if self._spec_check is not None:
            self._spec_check.close()
        if self._started:
            from unlearn_audit.engine.worker import close_all

            close_all(self._started)

    # -- collection --------------------------------------------------------------------------
    def cases_for(self, check: str) -> list[Any]:
        """The parameters of check `check`'s conformance test: one per unlearner x scenario x budget."""
        s = self.settings
        params = []
        for spec in s.unlearners:
            for scenario, checks in s.scenarios.items():
                if check not in checks:
                    continue
                for budget in s.budgets:
                    case = AuditCaseParams(
                        spec, s.profile, scenario, s.seeds, check, budget, show_budget=len(s.budgets) > 1
                    )
                    params.append(pytest.param(case, id=case.id))
        if not params:
            reason = f"no scenario of profile {s.profile!r} applies check {check!r}"
            params = [pytest.param(None, id=f"{s.profile}-not-applicable", marks=pytest.mark.skip(reason=reason))]
        return params

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrize each conformance test over (unlearner, scenario, seeds, budget) cases."""
        marker = metafunc.definition.get_closest_marker(CHECK_MARKER)
        if marker is not None and "audit_case" in metafunc.fixturenames:
            metafunc.parametrize("audit_case", self.cases_for(marker.args[0]), indirect=True)

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        """Carry the case's parameters with the test, so that its report is attributed even if it errors
        before it is judged (the report never parses them back out of the test id)."""
        case = case_of(item)
        if case is not None:
            item.user_properties.append((CASE_PROPERTY, json.dumps(case.record())))

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """`--audit-shard i/n`: deselect the audit cases of the other shards."""
        if self.settings.shard is None:
            return
        from unlearn_audit.plugin.sharding import groups_in_shard

        cases = [(item, case_of(item)) for item in items]
        keep = groups_in_shard([c.group for _, c in cases if c is not None], self.settings.shard)
        deselected = [item for item, c in cases if c is not None and c.group not in keep]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = [item for item, c in cases if c is None or c.group in keep]

    # -- fixtures, before the first test -----------------------------------------------------
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Serial: build the fixtures the selected tests need, with visible progress."""
        if self.role is Role.SERIAL:
            cases = [c for c in map(case_of, session.items) if c is not None]
            self.build_fixtures(sorted({(c.scenario, seed) for c in cases for seed in c.seeds}))

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """xdist controller (it does not collect): build every fixture of the run before the workers
        start, unless the cache says, without torch, that they are ready."""
        if self.role is not Role.CONTROLLER:
            return
        s = self.settings
        needed = [(scenario, seed) for scenario in s.scenarios for seed in s.seeds]
        from unlearn_audit.scenarios.prepared import references_ready

        if references_ready(s.cache_dir, s.profile, needed, s.device, s.threads or 1):
            return  # warm: the spec check is collected once a worker has collected
        self._finish_spec_check()
        self.build_fixtures(needed)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """xdist controller: a spec that does not resolve is a usage error before any test is scheduled."""
        self._finish_spec_check()

    def build_fixtures(self, needed: list[tuple[str, int]]) -> None:
        """Build the missing fixtures before the tests, with progress shown past pytest's capture."""
        if not needed:
            return
        from unlearn_audit.errors import RecipeError, ResourceUnavailable, UnusableDevice
        from unlearn_audit.tools.progress import build_with_progress

        try:
            audit = self.session
        except (RecipeError, UnusableDevice) as exc:
            raise usage_error(str(exc)) from None
        capman = self.config.pluginmanager.getplugin("capturemanager")
        try:
            if capman is not None:
                with capman.global_and_fixture_disabled():
                    build_with_progress(audit, needed)
            else:
                build_with_progress(audit, needed)
        except ResourceUnavailable as exc:  # e.g. an optional extra, pretrained weights or a data set
            raise usage_error(f"cannot build the fixtures of profile {audit.options.profile!r}: {exc}") from None
        except RemoteCacheError as exc:  # unreachable, or an entry that does not verify: one line, not a traceback
            raise usage_error(f"--audit-cache: {exc}") from None

    # -- xdist ---------------------------------------------------------------------------------
    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """Whole cases on one worker, each unlearner on few (`plugin.scheduling`), for `--dist load`
        (xdist's default with -n) and `loadgroup`; any other --dist is the user's choice."""
        if config.getvalue("dist") not in ("load", "loadgroup"):
            return None
        from unlearn_audit.plugin.scheduling import AuditCaseScheduler, case_spec, case_unit

        s = self.settings
        return AuditCaseScheduler(
            lambda nodeid: case_unit(nodeid, CONFORMANCE_DIR.name),
            lambda unit: case_spec(unit, s.unlearners, s.profile),
        )

    # -- the report ------------------------------------------------------------------------------
    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        """The profile, cache and unlearners, for the session header."""
        import os

        s = self.settings
        cache = s.cache_dir or os.environ.get("UNLEARN_AUDIT_CACHE") or "(platform user cache dir)"
        return [
            f"unlearn-audit: profile {s.profile}, seeds {list(s.seeds)}, budgets {list(s.budgets)}, "
            f"unlearners {list(s.unlearners)}",
            f"unlearn-audit: fixture cache {cache}",
        ]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Collect each test's result record for the summary and the JSON report."""
        if self.collector is not None:
            self.collector.add(report)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """The verdict table, the sandbox in force and where the report went."""
        if self.collector is None or not self.collector.results:
            return
        tr, s = terminalreporter, self.settings
        tr.section("unlearn-audit")
        # A terminal gets its own width; a log file (CI) gets room for every column.
        width = max(shutil.get_terminal_size().columns, 120) if getattr(tr, "isatty", False) else 170
        tr.write(self.collector.table(width=width, color=tr.hasmarkup))
        sandboxes = sorted(
            {str(r.meta.get("sandbox")) for r in self.collector.results.values() if r.meta.get("sandbox")}
        )
        for sandbox in sandboxes:
            tr.write_line(
                f"unlearn-audit: the methods ran sandboxed by {sandbox}"
                if not sandbox.startswith("none")
                else f"unlearn-audit: the methods ran without a sandbox ({sandbox}); "
                "copy and tamper detection are the defence"
            )
        built = builders([b for r in self.collector.records() for b in builds_measured_on(r.to_json()) or ()])
        if built:  # another torch or CPU kernel builds other weights: say which build these verdicts are of
            tr.write_line(f"unlearn-audit: fixtures built with {'; '.join(built)}")
        if self.config.getoption("audit_report"):
            tr.write_line(f"unlearn-audit: JSON report written to {self.config.getoption('audit_report')}")
        if s.update_baseline:
            tr.write_line(f"unlearn-audit: baseline written to {s.baseline}")
        elif s.baseline:
            results = list(self.collector.results.values())
            regressed = [r for r in results if (r.baseline or {}).get("regressed")]
            unmatched = [r for r in results if (r.baseline or {}).get("status") == "new"]
            other_fixture = [r for r in results if (r.baseline or {}).get("status") == "other fixture"]
            tr.write_line(
                f"unlearn-audit: compared with baseline {s.baseline}: {len(regressed)} significant regression(s)"
            )
            if unmatched:
                tr.write_line(
                    f"unlearn-audit: warning: {len(unmatched)} of {len(results)} result(s) have no match in the "
                    "baseline and were judged on their own (a result matches on unlearner, check, scenario, profile, "
                    "seeds and budget: run with the --audit-seeds, --audit-profile and --audit-budget the baseline "
                    "was written with)",
                    yellow=True,
                )
            if other_fixture:
                from unlearn_audit.reports.baseline import other_fixture_summary

                changes = [(r.baseline or {})["fixture"] for r in other_fixture]
                tr.write_line(
                    "unlearn-audit: warning: " + other_fixture_summary(changes, len(results)) + " They were judged "
                    "on their own verdicts.",
                    yellow=True,
                )

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Write the JSON report, and the baseline when asked to update it."""
        if self.collector is None:
            return
        path = self.config.getoption("audit_report")
        if path:
            self.collector.write(Path(path))
        if self.settings.update_baseline and self.settings.baseline and self.collector.results:
            self.collector.write(Path(self.settings.baseline))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """Close the workers and the session, however the run ended."""
        self.close()


def _import_the_engine() -> None:
    """Import torch and the engine while the workers start: on two cores the imports overlap."""
    import unlearn_audit.engine.session  # noqa: F401
