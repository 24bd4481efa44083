"""The pytest plugin: `pytest --unlearner pkg.mod:Method` runs the conformance suite on a method.

Loaded by every pytest run in an environment where unlearn-audit is installed, so this module
imports neither torch nor anything heavy; without `--unlearner` it does nothing but add its
options. With it, one `AuditRun` (`plugin.run`) is registered as a plugin and does the work; the
hooks here only create it and hand it the conformance tests' fixture.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from unlearn_audit.plugin.case import AuditCase
from unlearn_audit.plugin.options import add_options
from unlearn_audit.plugin.run import CHECK_MARKER, AuditRun
from unlearn_audit.plugin.state import run_key
from unlearn_audit.plugin.suite import CONFORMANCE_DIR


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{CHECK_MARKER}(name): a conformance test judging the named unlearn-audit check"
    )
    if config.getoption("unlearner", default=None):
        config.stash[run_key] = AuditRun.start(config)
        config.pluginmanager.register(config.stash[run_key], "unlearn-audit-run")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The conformance suite only runs with --unlearner."""
    if run_key not in config.stash and CONFORMANCE_DIR in (collection_path, *collection_path.parents):
        return True
    return None


@pytest.fixture
def audit_case(request: pytest.FixtureRequest) -> AuditCase:
    """The (unlearner, scenario, seeds, check) this conformance test judges."""
    return AuditCase(request.param, request.config, request.node)
