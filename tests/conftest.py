"""Shared fixtures of the harness's own tests.

`tiny_cache` builds the real `tiny` fixtures for seed 0 once per test session (about 12 s on
2 cores) so that plugin tests audit real models without rebuilding them in every test.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# torch.compile's kernel cache of this session only. Measured with torch 2.13 on an AVX-512 machine: CPU
# kernels that inductor cached in a run under ATEN_CPU_CAPABILITY=avx2 made a later run without it abort
# (SIGABRT) when it loaded them; the tests run under several capabilities, so none shares another's cache.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="unlearn-audit-tests-inductor-")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

# pytester's in-process runs restore sys.modules afterwards; a C extension such as torch cannot
# be imported twice in one process, so import everything heavy once, before any of those runs.
import functorch  # noqa: F401  (the budget counter wraps its transforms)
import torch

import unlearn_audit.engine.session  # noqa: F401
import unlearn_audit.methods  # noqa: F401
import unlearn_audit.tools.progress  # noqa: F401

# The same for torch's compiler stack, which registers operator libraries that cannot be registered twice: a
# run that imported it first dropped it, and the next compile failed with "Only a single TORCH_LIBRARY can be
# used to register the namespace quantized_decomposed". Naming a function to torch.compile imports the stack
# without compiling anything.
torch.compile(lambda x: x)

# One torch thread: robust on a busy 2-core CI machine (see unlearn_audit.engine.session.configure_threads).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from unlearn_audit.engine.session import AuditOptions, AuditSession

    root = tmp_path_factory.mktemp("audit-cache")
    audit = AuditSession(AuditOptions(profile="tiny", cache_dir=root))
    for scenario in audit.recipes:
        audit.fixture(scenario, 0)
    return root


@pytest.fixture(scope="session")
def prepared_tiny_cache(tiny_cache: Path) -> Path:
    """`tiny_cache` with every scenario's reference measurements stored and marked (what a serial run or
    `unlearn-audit fixtures build` leaves): an xdist controller then finds nothing to do."""
    from unlearn_audit.engine.session import AuditOptions, AuditSession

    audit = AuditSession(AuditOptions(profile="tiny", cache_dir=tiny_cache))
    for scenario in audit.recipes:
        audit.prepare_references(scenario, 0)
    return tiny_cache


@pytest.fixture
def audit_env(tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every audit run in this test at the shared, pre-built cache."""
    monkeypatch.setenv("UNLEARN_AUDIT_CACHE", str(tiny_cache))
    return tiny_cache


@pytest.fixture(scope="session")
def fixtures(tiny_cache: Path) -> dict:
    """The loaded seed-0 `gaussian` and `backdoor` fixtures, for tests that run methods directly."""
    from unlearn_audit.scenarios.cache import FixtureCache
    from unlearn_audit.scenarios.fixture import Fixture
    from unlearn_audit.scenarios.recipes import load_profile_recipes

    recipes = load_profile_recipes("tiny")
    cache = FixtureCache(tiny_cache)
    return {
        name: Fixture.load(recipes[name], 0, cache.get_or_build(recipes[name], 0)) for name in ("gaussian", "backdoor")
    }


@pytest.fixture(scope="session")
def unlearn_sanely():
    """Run a method on a request and assert what every method owes: a finite model of the same
    architecture, and the request's data left as it was. Returns the model."""
    from torch import nn

    from unlearn_audit.profiles.models import nonfinite_tensors

    def run(method, request):
        model = request.model_factory()
        reference = {k: v.shape for k, v in model.state_dict().items()}
        data = (request.forget.inputs, request.forget.labels, request.retain.inputs, request.retain.labels)
        before = [t.clone() for t in data]
        out = method.unlearn(model, request)
        assert isinstance(out, nn.Module) and not nonfinite_tensors(out)
        assert {k: v.shape for k, v in out.state_dict().items()} == reference
        assert all(torch.equal(a, b) for a, b in zip(before, data))
        return out

    return run
