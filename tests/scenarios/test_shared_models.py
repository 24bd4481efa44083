"""Models shared by the builds of several seeds: trained once, verified, never half-read, cleaned with the cache;
and Witches' Brew's null population drawn from them (`[attack] shared_references`)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

SHARED_RECIPE = """
[scenario]
name = "wb_shared"
checks = ["targeted_removed", "utility_preserved", "budget_respected"]
build_attempts = 1
[data]
source = "digits"
image_size = 8
[model]
architecture = "mlp"
hidden = [32]
[training]
epochs = 3
[attack]
kind = "witches_brew"
num_targets = 3
budget = 0.01
epsilon = 16
steps = 4
restarts = 1
surrogates = 1
reference_models = 3
shared_references = true
[checks.targeted_removed]
min_validated_targets = 1
"""


def recipe(text: str = SHARED_RECIPE):  # type: ignore[no-untyped-def]
    from unlearn_audit.scenarios.recipes import parse_recipe

    return parse_recipe("tiny", text)


def counting_trainer(calls: list[str], name: str, value: float = 1.0):  # type: ignore[no-untyped-def]
    def train() -> nn.Module:
        calls.append(name)
        model = nn.Linear(2, 1)
        with torch.no_grad():
            model.weight.fill_(value)
        return model

    return train


def test_a_shared_model_is_trained_once_and_read_back_from_the_store(tmp_path: Path) -> None:
    from unlearn_audit.scenarios.shared_models import SharedModelStore, shared_model_key

    store, r, calls = SharedModelStore(tmp_path), recipe(), []
    first, made = store.get_or_train(r, "clean-reference-1", counting_trainer(calls, "a", 2.0))
    again, read = SharedModelStore(tmp_path).get_or_train(r, "clean-reference-1", counting_trainer(calls, "b"))
    assert calls == ["a"]  # the second store found it on disk and trained nothing
    assert torch.equal(again["weight"], first["weight"]) and float(again["weight"][0, 0]) == 2.0
    assert made.trained_seconds is not None and read.trained_seconds is None
    assert made.sha256 == read.sha256 and made.key == read.key == shared_model_key(r, "clean-reference-1")
    assert made.as_meta()["trained_here"] and not read.as_meta()["trained_here"]
    [(path, meta)] = store.entries()
    assert path == store.path_for(r, "clean-reference-1") and meta["spec"]["name"] == "clean-reference-1"
    assert store.problems(path) == [] and store.entries("other-profile") == []
    # Another name is another model.
    store.get_or_train(r, "clean-reference-2", counting_trainer(calls, "c"))
    assert calls == ["a", "c"] and len(store.entries()) == 2


def test_a_corrupt_shared_model_is_trained_again_with_a_warning(tmp_path: Path) -> None:
    from unlearn_audit.scenarios.shared_models import WEIGHTS_FILE, SharedModelStore

    store, r, calls = SharedModelStore(tmp_path), recipe(), []
    store.get_or_train(r, "m", counting_trainer(calls, "a"))
    path = store.path_for(r, "m")
    data = bytearray((path / WEIGHTS_FILE).read_bytes())
    data[-1] ^= 0xFF
    (path / WEIGHTS_FILE).write_bytes(bytes(data))
    assert any("checksum mismatch" in p for p in store.problems(path))
    with pytest.warns(UserWarning, match="training corrupt shared model again"):
        state, record = store.get_or_train(r, "m", counting_trainer(calls, "b", 3.0))
    assert calls == ["a", "b"] and float(state["weight"][0, 0]) == 3.0 and record.trained_seconds is not None
    assert store.problems(path) == []


def test_an_interrupted_training_leaves_nothing_that_reads_as_a_model(tmp_path: Path) -> None:
    from unlearn_audit.scenarios.shared_models import SharedModelStore

    store, r = SharedModelStore(tmp_path), recipe()

    def crash() -> nn.Module:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.get_or_train(r, "m", crash)
    assert store.entries() == [] and not store.path_for(r, "m").exists()
    calls: list[str] = []
    store.get_or_train(r, "m", counting_trainer(calls, "a"))
    assert calls == ["a"]


def test_the_key_is_what_determines_the_model_and_nothing_else() -> None:
    from unlearn_audit.scenarios.shared_models import shared_model_key

    base = shared_model_key(recipe(), "m")
    assert shared_model_key(recipe(), "other") != base
    # The attack, the checks and the scenario's name do not enter it: such recipes share the models.
    assert shared_model_key(recipe(SHARED_RECIPE.replace("steps = 4", "steps = 9")), "m") == base
    assert shared_model_key(recipe(SHARED_RECIPE.replace('name = "wb_shared"', 'name = "x"')), "m") == base
    assert shared_model_key(recipe(SHARED_RECIPE + "[checks.utility_preserved]\nalpha = 0.05\n"), "m") == base
    # What the model is trained on, and how, does.
    assert shared_model_key(recipe(SHARED_RECIPE.replace("epochs = 3", "epochs = 4")), "m") != base
    assert shared_model_key(recipe(SHARED_RECIPE.replace("hidden = [32]", "hidden = [16]")), "m") != base
    assert shared_model_key(recipe(SHARED_RECIPE.replace("image_size = 8", "image_size = 16")), "m") != base


def test_a_store_without_a_root_keeps_its_models_for_its_lifetime() -> None:
    from unlearn_audit.scenarios.shared_models import SharedModelStore

    store, r, calls = SharedModelStore(None), recipe(), []
    a, first = store.get_or_train(r, "m", counting_trainer(calls, "a"))
    b, second = store.get_or_train(r, "m", counting_trainer(calls, "b"))
    assert calls == ["a"] and a is b and first.trained_seconds is not None and second.trained_seconds is None
    assert store.entries() == [] and store.clean() == 0


def test_concurrent_builds_train_a_shared_model_once(tmp_path: Path) -> None:
    """Two processes (xdist workers building seeds 0 and 1) ask for the same model at once: one trains it under
    the lock, the other waits and reads it."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        import torch
        from torch import nn
        from unlearn_audit.scenarios.recipes import parse_recipe
        from unlearn_audit.scenarios.shared_models import SharedModelStore

        def train():
            with open({str(tmp_path / "trained")!r}, "a") as f:
                f.write(sys.argv[1] + "\\n")
            time.sleep(1.0)
            return nn.Linear(2, 1)

        r = parse_recipe("tiny", {SHARED_RECIPE!r})
        state, record = SharedModelStore(Path({str(tmp_path / "cache")!r})).get_or_train(r, "m", train)
        print(record.sha256)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(i)], stdout=subprocess.PIPE, text=True) for i in range(2)
    ]
    digests = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert len((tmp_path / "trained").read_text().split()) == 1
    assert digests[0] == digests[1] and len(digests[0]) == 64


def test_two_seeds_draw_their_null_from_the_same_clean_models(tmp_path: Path) -> None:
    """The first seed's build trains the shared clean models, the second reads them; each fixture's reference
    margins are those models' margins on its own targets, and the fixtures say which models they used."""
    from unlearn_audit.attacks.witches_brew import adversarial_margins
    from unlearn_audit.profiles.models import model_factory
    from unlearn_audit.scenarios.cache import FixtureCache
    from unlearn_audit.scenarios.fixture import Fixture
    from unlearn_audit.scenarios.shared_models import shared_model_key

    r = recipe()
    cache = FixtureCache(tmp_path)
    stages: list[str] = []
    paths = [
        cache.get_or_build(r, seed, progress=lambda stage, *a, **k: stages.append(stage), device="cpu")
        for seed in (0, 1)
    ]
    shared_stages = [s for s in stages if s.startswith("shared clean model")]
    assert sorted(set(shared_stages)) == [f"shared clean model {j} of 3" for j in (1, 2, 3)]
    assert not any(s.startswith("reference ") for s in stages)  # no per-seed null models
    metas = [json.loads((p / "meta.json").read_text()) for p in paths]
    used = [m["shared_models"] for m in metas]
    assert [u["name"] for u in used[0]] == [f"clean-reference-{j}" for j in (1, 2, 3)]
    assert all(u["trained_here"] for u in used[0]) and not any(u["trained_here"] for u in used[1])
    assert [u["sha256"] for u in used[0]] == [u["sha256"] for u in used[1]]
    assert used[0][0]["key"] == shared_model_key(r, "clean-reference-1")
    assert "shared clean-reference-1" in metas[0]["train_seconds"]
    assert not any(k.startswith("shared") for k in metas[1]["train_seconds"])
    # Each seed's null: the stored shared models' margins on that seed's own targets.
    stored = cache.shared_models.entries()
    assert len(stored) == 3
    fixtures = [Fixture.load(r, seed, p) for seed, p in zip((0, 1), paths)]
    assert not torch.equal(fixtures[0].tensors["secret.target_indices"], fixtures[1].tensors["secret.target_indices"])
    from safetensors.torch import load_file

    factory = model_factory(r.model, tuple(metas[1]["input_shape"]), metas[1]["num_classes"])
    for f in fixtures:
        t = f.tensors
        x, adv = t["test_x"][t["secret.target_indices"]], t["secret.adversarial_classes"]
        expected = []
        for j in (1, 2, 3):
            model = factory()
            model.load_state_dict(
                load_file(str(cache.shared_models.path_for(r, f"clean-reference-{j}") / "weights.safetensors"))
            )
            expected.append(adversarial_margins(model, x, adv))
        assert torch.allclose(t["secret.reference_margins"], torch.stack(expected), atol=1e-5)
    # Cleaning the cache removes the shared models with the fixtures.
    assert cache.clean() == 2 and cache.shared_models.entries() == []


def test_the_cli_lists_verifies_and_cleans_shared_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from unlearn_audit.scenarios.shared_models import WEIGHTS_FILE, SharedModelStore
    from unlearn_audit.tools.cli import main

    store, r = SharedModelStore(tmp_path), recipe()
    store.get_or_train(r, "clean-reference-1", counting_trainer([], "a"))
    assert main(["fixtures", "list", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "shared by the builds" in out and "clean-reference-1" in out
    assert main(["fixtures", "verify", "--cache", str(tmp_path)]) == 0
    assert "1 intact, 0 corrupt" in capsys.readouterr().out
    (store.path_for(r, "clean-reference-1") / WEIGHTS_FILE).write_bytes(b"not a model")
    assert main(["fixtures", "verify", "--cache", str(tmp_path)]) == 1
    assert "CORRUPT" in capsys.readouterr().out
    assert main(["fixtures", "clean", "--cache", str(tmp_path)]) == 0
    assert "removed 0 fixture(s) and 1 shared model(s)" in capsys.readouterr().out
    assert store.entries() == []


def test_shared_references_must_be_a_boolean() -> None:
    from unlearn_audit.scenarios.build import build_scenario

    with pytest.raises(ValueError, match="shared_references must be true or false"):
        build_scenario(recipe(SHARED_RECIPE.replace("shared_references = true", 'shared_references = "yes"')), 0)
