"""The fixture cache: keys, atomic builds, checksums, one build under concurrency."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from unlearn_audit.scenarios.cache import DATA_FILE, META_FILE, WEIGHTS_FILE, FixtureCache
from unlearn_audit.scenarios.fixture import Fixture
from unlearn_audit.scenarios.recipes import load_profile_recipes, parse_recipe

FAST_RECIPE = textwrap.dedent(
    """
    [scenario]
    name = "gaussian"
    checks = ["gaussian_leakage"]
    [data]
    source = "digits"
    image_size = 16
    [model]
    architecture = "mlp"
    hidden = [32]
    [training]
    epochs = 2
    [attack]
    kind = "gaussian"
    num_poisons = 20
    sigma = 0.3
    """
)


@pytest.fixture
def fast_recipe():
    return parse_recipe("unit", FAST_RECIPE)


def test_key_depends_on_build_inputs_not_on_thresholds() -> None:
    base = load_profile_recipes("tiny")["gaussian"]
    assert base.cache_key(0) != base.cache_key(1)
    stricter = parse_recipe(
        "tiny",
        Path(__file__)
        .parents[2]
        .joinpath("fixtures/tiny/gaussian.toml")
        .read_text()
        .replace("alpha = 0.01", "alpha = 0.05"),
    )
    assert stricter.options("gaussian_leakage")["alpha"] == 0.05
    assert stricter.cache_key(0) == base.cache_key(0)
    retuned = parse_recipe("tiny", FAST_RECIPE)
    assert retuned.cache_key(0) != base.cache_key(0)


def test_build_writes_checksummed_safetensors_and_loads(tmp_path: Path, fast_recipe) -> None:
    cache = FixtureCache(tmp_path)
    path = cache.get_or_build(fast_recipe, seed=0)
    assert {p.name for p in path.iterdir()} == {WEIGHTS_FILE, DATA_FILE, META_FILE}
    meta = json.loads((path / META_FILE).read_text())
    assert set(meta["sha256"]) == {WEIGHTS_FILE, DATA_FILE}
    assert meta["recipe_hash"] == fast_recipe.cache_key(0) and meta["versions"]["torch"]
    assert cache.verify_path(path) == []
    fixture = Fixture.load(fast_recipe, 0, path)
    assert len(fixture.forget_set()) == 20 and len(fixture.retain_set()) == fixture.num_train - 20
    # the same recipe and seed give the same data and weights (deterministic build)
    again = FixtureCache(tmp_path / "other").get_or_build(fast_recipe, seed=0)
    assert json.loads((again / META_FILE).read_text())["sha256"] == meta["sha256"]


def test_an_entry_records_what_built_it_and_is_named_by_its_files(tmp_path: Path, fast_recipe) -> None:
    """Another torch or CPU kernel trains other weights under the same key: the entry says what built it, and its
    id follows its files, not its key."""
    import torch

    from unlearn_audit.scenarios.provenance import built_with, fixture_id

    path = FixtureCache(tmp_path).get_or_build(fast_recipe, seed=0)
    meta = json.loads((path / META_FILE).read_text())
    environment = meta["build_environment"]
    assert environment["torch"] == torch.__version__ and environment["device"] == "cpu"
    assert environment["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    text = built_with(meta)
    assert text.startswith(f"torch {torch.__version__} on cpu (") and environment["cpu_capability"] in text
    assert fixture_id(meta) == fixture_id({**meta, "created": "another day", "build_environment": {}})
    assert fixture_id(meta) != fixture_id({**meta, "sha256": {**meta["sha256"], WEIGHTS_FILE: "0" * 64}})
    older = {k: v for k, v in meta.items() if k != "build_environment"}  # built before the environment was kept
    assert built_with(older) == f"torch {torch.__version__} on cpu (kernels not recorded)"
    assert fixture_id({}) is None
    on_a_gpu = {"torch": "2.11.0", "device": "cuda", "machine": "x86_64", "gpu": "NVIDIA H200", "cuda": "12.8"}
    assert built_with({"build_environment": {**on_a_gpu, "cudnn": 91002}}) == (
        "torch 2.11.0 on cuda (x86_64, NVIDIA H200, CUDA 12.8, cuDNN 91002)"
    )


def test_corruption_is_detected_and_rebuilt(tmp_path: Path, fast_recipe) -> None:
    cache = FixtureCache(tmp_path)
    path = cache.get_or_build(fast_recipe, seed=0)
    weights = path / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    problems = cache.verify_path(path)
    assert problems and "checksum mismatch" in problems[0]
    with pytest.warns(UserWarning, match="rebuilding corrupt fixture"):
        rebuilt = cache.get_or_build(fast_recipe, seed=0)
    assert rebuilt == path and cache.verify_path(path) == []


def test_half_built_directory_is_replaced(tmp_path: Path, fast_recipe) -> None:
    cache = FixtureCache(tmp_path)
    path = cache.path_for(fast_recipe, 0)
    path.mkdir(parents=True)
    (path / WEIGHTS_FILE).write_bytes(b"garbage from a crashed build")
    assert not cache.is_built(fast_recipe, 0)
    cache.get_or_build(fast_recipe, 0)
    assert cache.verify_path(path) == []


def test_clean_and_entries(tmp_path: Path, fast_recipe) -> None:
    cache = FixtureCache(tmp_path)
    cache.get_or_build(fast_recipe, 0)
    cache.get_or_build(fast_recipe, 1)
    assert [e.meta["seed"] for e in cache.entries()] == [0, 1]
    assert cache.clean("other-profile") == 0
    assert cache.clean() == 2 and cache.entries() == []


def test_concurrent_processes_build_once(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from unlearn_audit.scenarios.cache import FixtureCache
        from unlearn_audit.scenarios.recipes import parse_recipe
        recipe = parse_recipe("unit", {FAST_RECIPE!r})
        built = []
        FixtureCache(sys.argv[1]).get_or_build(recipe, 0, progress=lambda *a: built.append(a))
        print("BUILT" if built else "REUSED")
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = sorted(p.communicate(timeout=300)[0].strip() for p in procs)
    assert all(p.returncode == 0 for p in procs)
    assert outputs == ["BUILT", "REUSED", "REUSED"]
