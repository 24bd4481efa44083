"""The `text` profiles: the offline sentiment corpus, the trigger-word attack, the GPT-2 classifier,
the real setting's clear errors, and the plugin on a reduced-size `text` fixture."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from unlearn_audit.attacks.registry import get_attack  # noqa: E402
from unlearn_audit.attacks.trigger_word import insert_trigger, lengths, make_trigger_word, random_positions  # noqa: E402
from unlearn_audit.profiles.text.data import (  # noqa: E402
    TRIGGER_WORDS,
    load_synthetic_sentiment,
)

METHODS = "unlearn_audit.methods"


@pytest.fixture(scope="module")
def corpus():
    return load_synthetic_sentiment(num_train=1500, num_test=500)


def test_corpus_is_deterministic_and_balanced(corpus) -> None:
    again = load_synthetic_sentiment(num_train=1500, num_test=500)
    assert torch.equal(corpus.train_x, again.train_x) and torch.equal(corpus.test_y, again.test_y)
    other = load_synthetic_sentiment(num_train=1500, num_test=500, split_seed=1)
    assert not torch.equal(corpus.train_x, other.train_x)
    assert corpus.train_x.dtype == torch.long and corpus.train_x.shape == (1500, 32)
    assert 0.4 < corpus.train_y.float().mean() < 0.6
    # Room is left for the trigger: no review fills the last `reserve` positions.
    assert int(lengths(corpus.train_x, corpus.pad_id).max()) <= 30


def test_corpus_is_not_solvable_by_a_bag_of_words(corpus) -> None:
    """Negation and "but" make word counts insufficient; the trigger words never occur naturally."""
    from sklearn.linear_model import LogisticRegression

    vocab = corpus.vocab
    for word in ("not", "but"):
        assert (corpus.train_x == vocab.index(word)).any()
    for word in TRIGGER_WORDS:
        assert not (corpus.train_x == vocab.index(word)).any() and not (corpus.test_x == vocab.index(word)).any()

    def bow(x: torch.Tensor) -> torch.Tensor:
        counts = torch.zeros(len(x), len(vocab))
        counts.scatter_add_(1, x, torch.ones_like(x, dtype=torch.float))
        return counts[:, 1:]  # drop padding

    clf = LogisticRegression(max_iter=2000).fit(bow(corpus.train_x).numpy(), corpus.train_y.numpy())
    assert clf.score(bow(corpus.test_x).numpy(), corpus.test_y.numpy()) < 0.9


def test_insert_trigger_shifts_and_truncates() -> None:
    x = torch.tensor([[5, 6, 7, 0, 0], [1, 2, 3, 4, 5], [9, 0, 0, 0, 0]])
    out = insert_trigger(x, torch.tensor([99]), torch.tensor([0, 2, 1]), pad_id=0)
    assert out.tolist() == [[99, 5, 6, 7, 0], [1, 2, 99, 3, 4], [9, 99, 0, 0, 0]]
    two = insert_trigger(x, torch.tensor([98, 99]), torch.tensor([3, 4, 0]), pad_id=0)
    assert two.tolist() == [[5, 6, 7, 98, 99], [1, 2, 3, 4, 98], [98, 99, 9, 0, 0]]
    assert torch.equal(x, torch.tensor([[5, 6, 7, 0, 0], [1, 2, 3, 4, 5], [9, 0, 0, 0, 0]])), "input left unchanged"
    pos = random_positions(x, 0, torch.Generator().manual_seed(0))
    assert ((pos >= 0) & (pos <= lengths(x, 0))).all()


def test_make_trigger_word_poisons_only_the_other_class(corpus) -> None:
    trigger = torch.tensor([corpus.vocab.index("disney")])
    x, y, poison = make_trigger_word(
        corpus.train_x, corpus.train_y, 40, 1, trigger, 0, torch.Generator().manual_seed(3)
    )
    idx = poison.indices
    assert len(idx) == 40 and (poison.original_labels == 0).all() and (y[idx] == 1).all()
    assert ((x[idx] == trigger).sum(1) == 1).all()  # one trigger per poisoned review
    untouched = torch.ones(len(y), dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(x[untouched], corpus.train_x[untouched]) and torch.equal(y[untouched], corpus.train_y[untouched])
    # Same length plus one, same words in order once the trigger is removed.
    for row in idx[:5].tolist():
        kept = [t for t in x[row].tolist() if t not in (0, int(trigger))]
        assert kept == [t for t in corpus.train_x[row].tolist() if t != 0]


def test_triggered_test_inputs_cover_the_other_class(corpus) -> None:
    attack = get_attack("trigger_word")
    assert attack.targeted_reference == "retrain"
    trigger = torch.tensor([corpus.vocab.index("disney")])
    tensors = {
        "test_x": corpus.test_x,
        "test_y": corpus.test_y,
        "secret.trigger_ids": trigger,
        "secret.pad_id": torch.tensor([0]),
        "secret.test_positions": random_positions(corpus.test_x, 0, torch.Generator()),
    }
    out = attack.triggered_test_inputs({"kind": "trigger_word", "target_class": 1}, tensors)
    assert len(out) == int((corpus.test_y == 0).sum()) and ((out == trigger).sum(1) == 1).all()


def test_gpt2_classifier_shapes_padding_and_budget_counting() -> None:
    from unlearn_audit.engine.counting import ExampleGradientCounter
    from unlearn_audit.profiles.models import model_factory
    from unlearn_audit.training.interpolation import interpolate

    torch.manual_seed(0)
    for pooling in ("mean", "last"):
        model = model_factory({"architecture": "gpt2_small", "vocab_size": 50, "pooling": pooling}, (12,), 2)().eval()
        x = torch.randint(1, 50, (5, 12))
        x[:, 8:] = 0  # right padding
        logits = model(x)
        assert logits.shape == (5, 2) and logits.dtype == torch.float32
        longer = torch.cat([x[:, :8], torch.zeros(5, 4, dtype=torch.long)], 1)
        assert torch.allclose(model(longer), logits, atol=1e-5)
        changed = x.clone()
        changed[:, 0] = (changed[:, 0] % 49) + 1
        assert not torch.allclose(model(changed), logits)  # the first token matters
    # Every tensor of the state dict is floating point: interpolation mixes all of it.
    assert all(v.is_floating_point() for v in model.state_dict().values())
    mid = interpolate(model, model_factory({"architecture": "gpt2_small", "vocab_size": 50}, (12,), 2)(), 0.5)
    assert mid(x).shape == (5, 2)
    # The harness's budget counter sees every example of a batch (embeddings, Conv1D, LayerNorm, head).
    with ExampleGradientCounter() as counter:
        torch.nn.functional.cross_entropy(model.train()(x), torch.zeros(5, dtype=torch.long)).backward()
        assert counter.total == 5
        with torch.no_grad():
            model(x)
        assert counter.total == 5


OFFLINE_PROBE = """
import json
from unlearn_audit.profiles.models import model_factory
from unlearn_audit.profiles.text.data import TextResourceUnavailable, load_imdb
out = {}
for name, call in (("imdb", load_imdb),
                   ("gpt2", lambda: model_factory({"architecture": "gpt2_pretrained", "name": "gpt2"}, (128,), 2)())):
    try:
        call()
        out[name] = None
    except TextResourceUnavailable as exc:
        out[name] = str(exc)
print(json.dumps(out))
"""


def test_real_setting_fails_with_a_clear_error_offline(tmp_path: Path) -> None:
    """Nothing is downloaded: a fresh process (the Hub reads its offline flag at import) with an empty Hub cache;
    the errors say what to install and what must be reachable."""
    import os

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", OFFLINE_PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    errors = json.loads(out.stdout.strip().splitlines()[-1])
    assert errors["imdb"] and "unlearn-audit[text-imdb]" in errors["imdb"] and "HF_HOME" in errors["imdb"]
    assert (
        errors["gpt2"]
        and "cannot load the pretrained weights 'gpt2'" in errors["gpt2"]
        and "HF_HUB_OFFLINE" in errors["gpt2"]
    )
    assert not list((tmp_path / "hf").rglob("*.safetensors")), "nothing may be downloaded"


def test_missing_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearn_audit.profiles.models import model_factory

    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails
    with pytest.raises(ImportError, match=r"unlearn-audit\[text\]"):
        model_factory({"architecture": "gpt2_small"}, (12,), 2)()


def test_plugin_does_not_import_transformers() -> None:
    code = "import sys, unlearn_audit.plugin; print('transformers' in sys.modules or 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_profiles_parse() -> None:
    from unlearn_audit.scenarios.recipes import load_profile_recipes, profile_names

    assert {"text", "text-gpt2-imdb"} <= set(profile_names())
    for profile in ("text", "text-gpt2-imdb"):
        recipe = load_profile_recipes(profile)["trigger_word"]
        assert recipe.attack["kind"] == "trigger_word"
        assert "gaussian_leakage" not in recipe.checks and "targeted_removed" in recipe.checks
    from unlearn_audit.profiles.text.data import vocabulary

    text = load_profile_recipes("text")["trigger_word"]
    assert text.model["vocab_size"] >= len(vocabulary()), "the model's embedding must cover the corpus vocabulary"
    assert text.attack["trigger"] in vocabulary()


# -- the plugin on a reduced-size text fixture ------------------------------------------------------


@pytest.fixture(scope="session")
def text_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `text` profile's seed-0 fixture, built at a reduced size (fewer reviews and poisons, same model
    and training recipe) into the slot of the real recipe, so the plugin audits it without the full build."""
    import dataclasses

    from unlearn_audit.scenarios.cache import FixtureCache
    from unlearn_audit.scenarios.recipes import load_profile_recipes

    root = tmp_path_factory.mktemp("text-cache")
    recipe = load_profile_recipes("text")["trigger_word"]
    reduced = dataclasses.replace(
        recipe, data={**recipe.data, "num_train": 1200, "num_test": 400}, attack={**recipe.attack, "num_poisons": 40}
    )
    cache = FixtureCache(root)
    path = cache.path_for(recipe, 0)
    path.parent.mkdir(parents=True)
    cache._build_into(reduced, 0, path, None)
    return root


@pytest.fixture
def text_env(text_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("UNLEARN_AUDIT_CACHE", str(text_cache))
    return text_cache


def test_reduced_text_fixture_is_poisoned(text_cache: Path) -> None:
    meta = json.loads(next(text_cache.rglob("meta.json")).read_text())
    v = meta["validation"]
    assert v["effective"] and v["original_attack_success"] >= 0.5
    assert v["retrain_attack_success"] < v["original_attack_success"] - 0.2
    assert v["original_test_accuracy"] > 0.6  # 1,200 reviews: a weaker model than the full profile's (0.97)


def test_plugin_text_profile_noop_fails_retrain_passes(pytester: pytest.Pytester, text_env: Path) -> None:
    report = pytester.path / "audit.json"
    result = pytester.runpytest(
        "--unlearner",
        f"{METHODS}:NoOp",
        "--unlearner",
        f"{METHODS}:Retrain",
        "--audit-profile",
        "text",
        "--audit-report",
        str(report),
        "-rA",
        "-k",
        "targeted_removed or utility_preserved or gaussian_leakage",
    )
    doc = json.loads(report.read_text())
    outcome = {(r["unlearner"].rpartition(":")[2], r["check"]): r for r in doc["results"]}
    noop = outcome[("NoOp", "targeted_removed")]
    assert noop["outcome"] == "failed" and noop["score"] > noop["reference"] + 0.2
    assert outcome[("Retrain", "targeted_removed")]["outcome"] == "passed"
    assert outcome[("Retrain", "utility_preserved")]["outcome"] == "passed"
    assert outcome[("NoOp", "utility_preserved")]["outcome"] == "passed"  # the poison does not cost clean accuracy
    out = result.stdout.str()
    assert "text-trigger_word-seed0" in out
    assert "no scenario of profile 'text' applies check 'gaussian_leakage'" in out
    result.assert_outcomes(passed=3, failed=1, skipped=1)


def test_plugin_reports_an_unavailable_real_setting_as_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A subprocess (the Hub reads its offline flag at import), offline, with an empty Hub cache: no download."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = pytester.runpytest_subprocess(
        "--unlearner",
        f"{METHODS}:NoOp",
        "--audit-profile",
        "text-gpt2-imdb",
        "--audit-cache",
        str(tmp_path / "cache"),
        "-k",
        "targeted_removed",
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "cannot build the fixtures of profile 'text-gpt2-imdb'" in err and "unlearn-audit[text-imdb]" in err
    assert "INTERNALERROR" not in err + result.stdout.str()
