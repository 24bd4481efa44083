"""`relearning_resistant`: its rules on relearning results stored ahead of the check, and one real relearning.

The check reads every model's relearning curves through the session's memo (stored reference
measurements are read back, never recomputed), so the rules are tested on curves written into the
memo by hand: for a Gaussian poison (mean GUS of the held-out poisons, exact N(0, 1) null) and for a
backdoor (attack success) against retrain alone or against a population of clean models. One test
runs the attacker for real: a few Adam steps on tiny linear models, with the registered Gaussian attack
measuring the held-out poisons' GUS along the way.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from scipy import stats as st
from synthetic_checks import Memo, context, scenario_fixture
from torch import nn

from unlearn_audit.attacks.base import PoisonMeasurement
from unlearn_audit.checks import evidence
from unlearn_audit.checks.mde import minimal_detectable_effect
from unlearn_audit.checks.relearning_resistant import run, window_mean
from unlearn_audit.training.relearning import attack_from_options

D, C, N, K = 64, 3, 120, 40  # features, classes, training examples, poisons (the forget set)
SIZES = [0, 10, 20]
OPTIONS = {"alpha": 0.01, "margin": 0.05, "sizes": SIZES, "steps": 6, "eval_every": 3, "window": 1}
LEVEL = 0.01 / len(SIZES)
HELD_OUT = K - max(SIZES)


def tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g)
    y = torch.randint(C, (N,), generator=g)
    forget = torch.randperm(N, generator=g)[:K].sort().values
    noise = torch.randn(K, D, generator=g)
    poisoned = x.clone()
    poisoned[forget] += 0.3 * noise
    return {
        "train_x": poisoned,
        "clean_train_x": x,
        "train_y": y,
        "forget_indices": forget,
        "secret.noise": noise,
        "test_x": torch.randn(50, D, generator=g),
        "test_y": torch.randint(C, (50,), generator=g),
    }


def model() -> nn.Module:
    return nn.Linear(D, C).eval()


def memo_name(fixture, options) -> str:
    attack = attack_from_options(options, fixture.recipe.training, fixture.num_train - K + max(options["sizes"]))
    return f"relearn-{'-'.join(map(str, options['sizes']))}-{attack.key()}"


def gaussian_curves(means: list[float], n: int = HELD_OUT) -> dict[int, dict]:
    """Relearning results per k whose verdict reads the mean GUS `means[j]` of `n` held-out poisons."""
    return {
        k: {"curve": [(0, 0.0), (6, m)], "final": PoisonMeasurement(m, 1 / math.sqrt(n), n, "unit_normal")}
        for k, m in zip(SIZES, means)
    }


def proportion_curves(rates: list[float], n: int = 200) -> dict[int, dict]:
    out = {}
    for k, p in zip(SIZES, rates):
        out[k] = {
            "curve": [(0, 0.0), (6, p)],  # a window's mean, so not necessarily a whole number of hits
            "final": PoisonMeasurement(p, math.sqrt(p * (1 - p) / n), n, "proportion", round(p * n)),
        }
    return out


def judge_stored(kind: str, method: dict, retrain: dict, original: dict, clean: list[dict] = (), options=None):
    options = {**OPTIONS, **(options or {})}
    models = {"method": model(), "retrain": model(), "original": model()}
    clean_models = [model() for _ in clean]
    attack = {"target_class": 0, "patch_size": 1, "patch_value": 1.0} if kind == "backdoor" else {"sigma": 0.3}
    fixture = scenario_fixture(
        tensors(), models["original"], models["retrain"], kind=kind, attack=attack, clean_models=clean_models
    )
    memo = Memo()
    name = memo_name(fixture, options)
    for m, curves in (
        (models["method"], method),
        (models["retrain"], retrain),
        (models["original"], original),
        *zip(clean_models, clean),
    ):
        memo.store(m, name, curves)
    result = run(context(fixture, models["method"], options, memo=memo))
    assert not any(n.startswith("relearn-") for n in memo.computed)  # every curve was read back
    return result


# -- a Gaussian poison: the held-out poisons' GUS, N(0, 1) when the poison is gone ------------------------------

ZERO = gaussian_curves([0.0, 0.0, 0.0])
LEAKY = gaussian_curves([1.5, 1.6, 1.8])  # z about 7 at every k


def test_gaussian_a_clean_model_passes_at_every_k() -> None:
    r = judge_stored("gaussian", gaussian_curves([0.1, -0.2, 0.15]), ZERO, LEAKY)
    assert r.verdict == "pass" and r.message == ""
    assert [e["failed"] for e in r.details["relearning"]] == [False, False, False]
    assert r.reference_label == "retrain" and r.direction == "lower_is_better"
    assert f"mean GUS of the {HELD_OUT} held-out poisons" in r.rule and "alpha=0.01/3" in r.rule
    assert r.details["power"] > 0.999  # the original's z of about 7 fails for certain
    assert r.details["steps"] == 6 and r.details["attack"]["eval_every"] == 3


def test_gaussian_the_poison_coming_back_at_one_k_fails() -> None:
    r = judge_stored("gaussian", gaussian_curves([0.1, 1.2, 0.2]), ZERO, LEAKY)  # z = 5.4 at k=10
    assert r.verdict == "fail" and r.details["worst_k"] == 10 and r.score == 1.2
    assert r.message == "the poison comes back under relearning (mean GUS): k=10: 1.200 vs retrain 0.000"
    assert [e["failed"] for e in r.details["relearning"]] == [False, True, False]


def test_gaussian_doing_nothing_fails_at_every_k() -> None:
    r = judge_stored("gaussian", LEAKY, ZERO, LEAKY)
    assert r.verdict == "fail" and all(e["failed"] for e in r.details["relearning"])
    assert r.details["worst_k"] == 20  # the largest z


def test_gaussian_each_k_is_tested_at_alpha_over_the_number_of_sizes() -> None:
    bonferroni = float(st.norm.isf(LEVEL / 2))  # 2.94, against 2.58 for one test at 0.01
    between = 2.75 / math.sqrt(HELD_OUT)  # significant alone at 0.01, not at 0.01 / 3
    r = judge_stored("gaussian", gaussian_curves([between, 0.0, 0.0]), ZERO, LEAKY)
    assert r.verdict == "pass"
    beyond = bonferroni * 1.05 / math.sqrt(HELD_OUT)
    assert judge_stored("gaussian", gaussian_curves([beyond, 0.0, 0.0]), ZERO, LEAKY).verdict == "fail"
    assert judge_stored("gaussian", gaussian_curves([-beyond, 0.0, 0.0]), ZERO, LEAKY).verdict == "fail"  # two-sided


def test_gaussian_no_usable_score_fails() -> None:
    r = judge_stored("gaussian", gaussian_curves([0.0, math.nan, 0.0]), ZERO, LEAKY)
    assert r.verdict == "fail" and r.details["worst_k"] == 10


def test_gaussian_evidence_reproduces_the_verdict() -> None:
    for means in ([0.1, -0.2, 0.15], [0.1, 1.2, 0.2], [1.5, 1.6, 1.8]):
        r = judge_stored("gaussian", gaussian_curves(means), ZERO, LEAKY)
        ev = r.details["evidence"]
        assert ev["kind"] == "any" and ev["divisor"] == 3 and list(ev["parts"]) == ["k=0", "k=10", "k=20"]
        assert evidence.decide([ev], 0.01).rejected == (r.verdict == "fail")


def test_a_weak_original_gives_low_power() -> None:
    r = judge_stored("gaussian", ZERO, ZERO, gaussian_curves([0.1, 0.1, 0.1]))
    assert r.verdict == "pass" and r.details["power"] < 0.2 and "low power" in r.message
    assert "under the same relearning attack (its most powerful k)" in r.message


def test_sizes_must_leave_held_out_poisons() -> None:
    fixture = scenario_fixture(tensors(), model(), model(), kind="gaussian", attack={"sigma": 0.3})
    with pytest.raises(ValueError, match=r"relearning sizes \[0, 40\] leave no held-out poisons out of 40"):
        run(context(fixture, model(), {**OPTIONS, "sizes": [0, 40]}))


# -- a backdoor: attack success after relearning --------------------------------------------------------------

POPULATION = [0.50, 0.44, 0.58, 0.47, 0.62, 0.52, 0.55, 0.49, 0.53]  # retrain, then 8 clean models, at every k


def population_curves():
    return [proportion_curves([p, p, p]) for p in POPULATION[1:]]


def judge_population(method_rates: list[float], original_rates=(1.0, 1.0, 1.0)):
    return judge_stored(
        "backdoor",
        proportion_curves(method_rates),
        proportion_curves([POPULATION[0]] * 3),
        proportion_curves(list(original_rates)),
        population_curves(),
    )


def test_backdoor_relearned_like_clean_models_passes() -> None:
    r = judge_population([0.51, 0.56, 0.49])
    assert r.verdict == "pass" and r.message == ""
    assert r.reference_label == "retrain and 8 clean models"
    assert r.reference == pytest.approx(sum(POPULATION) / 9)
    entry = r.details["relearning"][0]
    assert entry["clean_models"] == POPULATION[1:] and entry["retrain"] == POPULATION[0]
    assert "prediction t-test against the 9 models" in r.rule
    assert r.details["power"] > 0.9


def test_backdoor_doing_nothing_fails_against_the_population() -> None:
    r = judge_population([1.0, 1.0, 1.0])
    assert r.verdict == "fail" and all(e["failed"] for e in r.details["relearning"])
    assert "k=0: 1.000 vs clean models 0.522 (retrain 0.500, prediction sd 0.059)" in r.message


def judge_population_with(method_rates: list[float], options: dict):
    return judge_stored(
        "backdoor",
        proportion_curves(method_rates),
        proportion_curves([POPULATION[0]] * 3),
        proportion_curves([1.0, 1.0, 1.0]),
        population_curves(),
        options,
    )


def test_backdoor_a_partial_removal_beyond_the_detectable_excess_fails() -> None:
    # the excess detected with power 0.8: (t critical + 0.84) prediction sds, about 0.31 above the mean
    critical = float(st.t.isf(LEVEL, 8))
    detectable = (critical + 0.84) * 0.0586
    r = judge_population([0.52, 0.52 + detectable + 0.05, 0.52])
    assert r.verdict == "fail" and r.details["worst_k"] == 10
    mde = minimal_detectable_effect([r.details["evidence"]], 0.01)
    assert mde is not None and mde.parts is not None and mde.parts["k=10"] < detectable + 0.05


def test_backdoor_against_the_population_has_no_margin_unless_the_recipe_sets_one() -> None:
    """The population's spread is the tolerance: a method at the clean models' mean sits at t = 0; with a
    `population_margin` a method that far above the mean does."""
    mean = sum(POPULATION) / 9
    plain = judge_population([mean] * 3)
    assert plain.verdict == "pass" and abs(plain.details["relearning"][0]["t"]) < 1e-9
    assert " by more than" not in plain.rule
    lenient = judge_population_with([mean + 0.05] * 3, {"population_margin": 0.05})
    assert lenient.verdict == "pass" and abs(lenient.details["relearning"][0]["t"]) < 1e-9
    assert "(same attack) by more than 0.05 at any k" in lenient.rule


def test_backdoor_a_population_that_never_relearns_still_has_sampling_noise() -> None:
    # every clean model at 0: the population's spread is floored at one measurement's binomial sd
    none = [proportion_curves([0.0] * 3)] * 8
    noop = proportion_curves([1.0] * 3)
    clean = judge_stored("backdoor", proportion_curves([0.0] * 3), proportion_curves([0.0] * 3), noop, none)
    assert clean.verdict == "pass" and clean.details["relearning"][0]["prediction_sd"] > 0
    small = judge_stored("backdoor", proportion_curves([0.2, 0.0, 0.0]), proportion_curves([0.0] * 3), noop, none)
    assert small.verdict == "fail"


def test_backdoor_against_retrain_alone_is_the_newcombe_test() -> None:
    zero, noop = proportion_curves([0.05] * 3), proportion_curves([0.95] * 3)
    ok = judge_stored("backdoor", proportion_curves([0.06, 0.05, 0.07]), zero, noop)
    assert ok.verdict == "pass" and ok.reference_label == "retrain" and "(Newcombe-Wilson)" in ok.rule
    bad = judge_stored("backdoor", proportion_curves([0.05, 0.75, 0.05]), zero, noop)
    assert bad.verdict == "fail" and bad.message.endswith("k=10: 0.750 vs retrain 0.050")
    assert evidence.decide([bad.details["evidence"]], 0.01).rejected


def test_window_mean_averages_the_curves_end() -> None:
    hits = [PoisonMeasurement(p, 0.0, 100, "proportion", round(p * 100)) for p in (0.2, 0.4, 0.6)]
    m = window_mean(hits)
    assert m.value == pytest.approx(0.4) and m.null == "proportion" and m.n == 100 and m.hits == pytest.approx(40)
    assert m.stderr == pytest.approx(math.sqrt(0.4 * 0.6 / 100))
    gus = [PoisonMeasurement(v, 0.2, 25, "unit_normal") for v in (1.0, 2.0)]
    g = window_mean(gus)
    assert g.value == 1.5 and g.stderr == 0.2 and g.null == "unit_normal"
    assert window_mean(hits[:1]) is hits[0]


# -- the attacker for real -------------------------------------------------------------------------------------


def test_a_real_relearning_attack_on_linear_models() -> None:
    """A few small Adam steps: the leaky original's held-out poisons still leak after them, a model without
    the poison's trace stays at the N(0, 1) null; curves are computed once per model and then read back."""
    t = tensors(seed=1)
    g = torch.Generator().manual_seed(2)
    base = torch.randn(C, D, generator=g) * 0.05
    leak = torch.zeros(C, D).index_add_(0, t["train_y"][t["forget_indices"]], t["secret.noise"])

    def linear(w: torch.Tensor) -> nn.Linear:
        m = nn.Linear(D, C)
        with torch.no_grad():
            m.weight.copy_(w)
            m.bias.zero_()
        return m.eval()

    original, retrain = linear(base + 0.05 * leak), linear(torch.randn(C, D, generator=g) * 0.05)
    fixture = scenario_fixture(t, original, retrain, kind="gaussian", attack={"sigma": 0.3})
    options = {**OPTIONS, "lr": 1e-4, "batch_size": 32, "window": 2}
    memo = Memo()
    removed = run(context(fixture, linear(base), options, memo=memo))
    assert removed.verdict == "pass"
    assert all(abs(e["method"]) * math.sqrt(HELD_OUT) < 2.5 for e in removed.details["relearning"])
    curve = removed.details["relearning"][1]["method_curve"]
    assert [step for step, _ in curve] == [0, 3, 6]  # evaluated every 3 steps, read over the last 2
    noop = run(context(fixture, linear(base + 0.05 * leak), options, memo=memo))
    assert noop.verdict == "fail" and all(e["method"] > 1.0 for e in noop.details["relearning"])
    # the method's, retrain's and the original's curves for the first method; only the second method's after
    assert memo.computed.count(memo_name(fixture, options)) == 4


# -- the detectable excess at tiny's spread (issue: a dormant backdoor that comes back) ----------------------------

TINY_SPREAD = 0.049  # sd of the 25 clean models' attack success at k = 10 on tiny's backdoor, seed 0
RUN_LEVEL = 0.01 / 4  # a default run's relearning test on tiny: alpha over its 4 exact-null tests


def tiny_like_seed(rng: random.Random, excess: float) -> dict:
    """One seed's evidence: 25 clean models around 0.53 (k = 10), near 0 (k = 0), near 0.90 (k = 50); the
    method's model relearns `excess` above the clean models' mean at k = 10 and like them elsewhere."""
    parts = {}
    for k, mean, sd in ((0, 0.0, 0.0), (10, 0.53, TINY_SPREAD), (50, 0.90, 0.015)):
        population = [min(1.0, max(0.0, rng.gauss(mean, sd))) for _ in range(25)]
        centre = sum(population) / 25
        value = centre + (excess if k == 10 else 0.0)
        parts[f"k={k}"] = evidence.population(value, 324, population, 0.0)
    return evidence.any_of(parts, 3)


@pytest.mark.parametrize("seed", range(5))
def test_an_excess_of_0_25_fails_a_one_seed_run_and_0_12_fails_five_seeds_pooled(seed: int) -> None:
    rng = random.Random(seed)
    assert evidence.decide([tiny_like_seed(rng, 0.25)], RUN_LEVEL).rejected
    pooled = [tiny_like_seed(rng, 0.12) for _ in range(5)]
    assert evidence.decide(pooled, RUN_LEVEL).rejected
    mde_one = minimal_detectable_effect(pooled[:1], RUN_LEVEL)
    mde_five = minimal_detectable_effect(pooled, RUN_LEVEL)
    assert mde_one is not None and mde_five is not None
    assert mde_one.parts is not None and mde_five.parts is not None
    assert mde_one.parts["k=10"] < 0.25 and mde_five.parts["k=10"] < 0.12
    # like the clean models: passes, alone and pooled
    assert not evidence.decide([tiny_like_seed(rng, 0.0)], RUN_LEVEL).rejected
    assert not evidence.decide([tiny_like_seed(rng, 0.0) for _ in range(5)], RUN_LEVEL).rejected
