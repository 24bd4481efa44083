"""A fixture whose attack fails validation is built again from the next build seed, a bounded number of times,
and says so; a fixture that validates at once is what it always was."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from unlearn_audit.attacks.gaussian import GaussianAttack
from unlearn_audit.scenarios.build import build_once, build_scenario, build_seed
from unlearn_audit.scenarios.recipes import BUILD_ATTEMPTS, load_profile_recipes, parse_recipe


def small_gaussian(attempts: int | None = None):
    r = load_profile_recipes("tiny")["gaussian"]
    r = dataclasses.replace(r, training=dataclasses.replace(r.training, epochs=1))
    return r if attempts is None else dataclasses.replace(r, build_attempts=attempts)


def failing_first(monkeypatch: pytest.MonkeyPatch, failures: int) -> list[int]:
    """Make the Gaussian attack's validation fail on its first `failures` calls; returns the call counter."""
    real = GaussianAttack.validate
    calls = [0]

    def validate(self: Any, recipe: Any, original: Any, retrain: Any, tensors: Any) -> dict[str, Any]:
        v = real(self, recipe, original, retrain, tensors)
        calls[0] += 1
        return {**v, "effective": calls[0] > failures}

    monkeypatch.setattr(GaussianAttack, "validate", validate)
    return calls


def test_build_seeds_start_at_the_audit_seed_and_never_meet_another() -> None:
    assert build_seed(3, 0) == 3
    later = {build_seed(s, a) for s in range(20) for a in range(1, BUILD_ATTEMPTS)}
    assert len(later) == 20 * (BUILD_ATTEMPTS - 1) and not later & set(range(1000))


def test_a_fixture_that_validates_at_once_is_one_build_from_its_seed() -> None:
    r = small_gaussian()
    built = build_scenario(r, 0)
    again = build_once(r, 0)
    assert built.meta["build_seed"] == 0 and "build_attempts" not in built.meta
    assert torch.equal(built.weights["original"]["1.weight"], again.weights["original"]["1.weight"])


def test_a_failed_validation_rebuilds_from_the_next_build_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = failing_first(monkeypatch, 2)
    first = build_once(small_gaussian(), 0)  # what the first attempt builds (validation call 1: failed)
    stages: list[str] = []
    built = build_scenario(small_gaussian(), 0, progress=lambda stage, *a, **k: stages.append(stage))
    assert calls[0] == 3  # the standalone build, then the scenario's failed first build and its rebuild
    assert built.meta["build_seed"] == build_seed(0, 1) and built.meta["validation"]["effective"]
    attempts = built.meta["build_attempts"]
    assert [a["build_seed"] for a in attempts] == [0, build_seed(0, 1)]
    assert [a["validation"]["effective"] for a in attempts] == [False, True]
    assert not torch.equal(built.tensors["secret.noise"], first.tensors["secret.noise"])  # new poisons too
    assert any(s.startswith(f"build 2 of {BUILD_ATTEMPTS}: ") for s in stages)


def test_no_valid_build_keeps_the_last_and_lists_every_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    failing_first(monkeypatch, 100)
    built = build_scenario(small_gaussian(attempts=2), 5)
    assert not built.meta["validation"]["effective"]
    assert [a["build_seed"] for a in built.meta["build_attempts"]] == [5, build_seed(5, 1)]


def test_build_attempts_are_part_of_the_recipe_and_its_key() -> None:
    text = '[scenario]\nname = "s"\nchecks = []\n[data]\nsource = "digits"\n[model]\narchitecture = "mlp"\n'
    text += '[training]\n[attack]\nkind = "gaussian"\n'
    plain = parse_recipe("p", text)
    assert plain.build_attempts == BUILD_ATTEMPTS and plain.build_spec(0)["build_attempts"] == BUILD_ATTEMPTS
    once = parse_recipe("p", text.replace("checks = []", "checks = []\nbuild_attempts = 1"))
    assert once.build_attempts == 1 and once.cache_key(0) != plain.cache_key(0)
    with pytest.raises(ValueError, match="build_attempts must be an integer >= 1"):
        parse_recipe("p", text.replace("checks = []", "checks = []\nbuild_attempts = 0"))
    assert {r.build_attempts for r in load_profile_recipes("cifar10-resnet18-standin").values()} == {1}


def test_a_fixture_whose_every_build_failed_xfails_naming_each_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """Through the session: the check is not judged, and the xfail names how many builds were tried and their seeds."""
    from unlearn_audit.engine.options import AuditOptions
    from unlearn_audit.engine.session import AuditSession

    real = GaussianAttack.validate
    monkeypatch.setattr(
        GaussianAttack, "validate", lambda self, *a: {**real(self, *a), "effective": False, "rule": "never (test)"}
    )
    audit = AuditSession(
        AuditOptions(profile="cifar10-resnet18-standin", cache_dir=tmp_path, device="cpu", isolation="inline")
    )
    try:
        audit.recipes["gaussian"] = dataclasses.replace(audit.recipes["gaussian"], build_attempts=2)
        result, meta = audit.run_check("gaussian_leakage", "unlearn_audit.methods:NoOp", "gaussian", 0)
    finally:
        audit.close()
    seeds = [0, build_seed(0, 1)]
    assert result.verdict == "xfail" and result.score is None
    assert result.message == (
        "the attack did not work on the poisoned model of any of this fixture's 2 builds "
        f"(build seeds {seeds[0]}, {seeds[1]}), so it cannot judge removal"
    )
    assert [b["build_seed"] for b in result.details["build_attempts"]] == seeds
    assert result.rule == "fixture validation: never (test)"
