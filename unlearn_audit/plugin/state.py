"""What the plugin keeps in the pytest config's stash: the settings, the report collector, the session.

Its own module so that the hooks (`unlearn_audit.plugin`) and the cases (`plugin.case`) share it
without importing each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from unlearn_audit.plugin.settings import AuditSettings

if TYPE_CHECKING:
    from unlearn_audit.engine.session import AuditSession
    from unlearn_audit.engine.worker import UnlearnerWorker
    from unlearn_audit.reports.collector import ReportCollector

settings_key = pytest.StashKey[AuditSettings]()
collector_key = pytest.StashKey["ReportCollector"]()
session_key = pytest.StashKey["AuditSession"]()
prestarted_key = pytest.StashKey["dict[str, UnlearnerWorker]"]()  # workers that resolved the specs at start-up
spec_check_key = pytest.StashKey["UnlearnerWorker"]()  # the xdist controller's spec check, until its answer is read
fork_server_address_key = pytest.StashKey[str]()  # the xdist controller's shared fork server, for its workers


def get_audit_session(config: pytest.Config) -> "AuditSession":
    """The session's single AuditSession (created on first use; imports torch)."""
    if session_key not in config.stash:
        from unlearn_audit.engine.session import AuditOptions, AuditSession, configure_threads

        s = config.stash[settings_key]
        configure_threads(s.threads)
        config.stash[session_key] = AuditSession(
            AuditOptions(
                profile=s.profile,
                cache_dir=Path(s.cache_dir) if s.cache_dir and "://" not in s.cache_dir else None,
                remote_cache=s.cache_dir if s.cache_dir and "://" in s.cache_dir else None,
                timeout=s.timeout,
                device=s.device,
                isolation=s.isolation,
                max_memory=s.max_memory,
                threads=s.threads,
                budgets_in_run=len(s.budgets),
                keep_seed_parts=s.keep_seed_parts,
            ),
        )
        # The workers that resolved the specs at start-up run the audit: no second start.
        config.stash[session_key].workers.update(config.stash.get(prestarted_key, {}))
        config.stash[prestarted_key] = {}
    return config.stash[session_key]
