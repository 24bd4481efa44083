"""The tamper-resistant unlearners of Siddiqui et al. (Weight Distortion, Weight Dist Reg, CBFT, their
alternating-SCRUB safeguard) and the single-phase SGD ablations: each runs on the real tiny fixtures within
its budget, is reproducible for a seed, moves the model further from the original than plain GD does (the
published two-phase variants further than their SGD ablations), and survives degenerate requests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearn_audit.engine.counting import ExampleGradientCounter
from unlearn_audit.engine.runner import run_unlearner
from unlearn_audit.methods import (
    CBFT,
    CBFTSGD,
    AlternatingSCRUB,
    GradientAscent,
    GradientDescent,
    WeightDistortion,
    WeightDistReg,
    WeightDistRegSGD,
)
from unlearn_audit.methods._adam_reach import reach_scaled_lr
from unlearn_audit.profiles.models import small_cnn
from unlearn_audit.protocol import Budget, ExampleSet, TrainingRecipe, UnlearningRequest
from unlearn_audit.scenarios.fixture import Fixture
from unlearn_audit.training.interpolation import parameter_distance

CPU = torch.device("cpu")

METHODS = [WeightDistortion(), AlternatingSCRUB(), WeightDistReg(), CBFT(), WeightDistRegSGD(), CBFTSGD()]
VARIANTS = METHODS + [
    WeightDistortion(relative=True),
    WeightDistReg(safeguard=None),
    CBFT(safeguard=None),
    WeightDistRegSGD(initial_safeguard=GradientAscent()),
    CBFTSGD(initial_safeguard=GradientAscent(), mix=(0.2, 0.8), barrier_on_retain=False),
]


def method_id(method) -> str:
    extra = "+safeguard" if getattr(method, "initial_safeguard", None) is not None else ""
    extra += "-no-safeguard" if hasattr(method, "safeguard") and method.safeguard is None else ""
    extra += "-relative" if getattr(method, "relative", False) else ""
    return type(method).__name__ + extra


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([t.flatten().float() for t in model.state_dict().values()])


def run(method, fixture: Fixture):
    return run_unlearner(method, fixture, budget_fraction=0.1, seed=7, timeout=120, device=CPU)


@pytest.fixture(scope="module")
def outcomes(fixtures: dict[str, Fixture]):
    """Each (method, scenario) run once per module, shared by the tests below."""
    memo: dict = {}

    def get(method, scenario: str):
        key = (repr(method), scenario)
        if key not in memo:
            memo[key] = run(method, fixtures[scenario])
        return memo[key]

    return get


@pytest.mark.parametrize("scenario", ["gaussian", "backdoor"])
@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_method_on_tiny_fixture(method, scenario: str, fixtures: dict[str, Fixture], outcomes) -> None:
    """ok, within budget as the harness counts, changes the model, bit-identical for a seed."""
    first, second = outcomes(method, scenario), run(method, fixtures[scenario])
    assert first.ok, first.error
    assert second.ok, second.error
    assert 0 < first.example_gradients <= first.budget.example_gradients
    assert not torch.equal(flat(first.model), flat(fixtures[scenario].original)), "the method left the model unchanged"
    assert torch.equal(flat(first.model), flat(second.model)), "same seed, different weights"


CBFT_STAYS_CLOSE = pytest.mark.xfail(
    strict=True,
    reason="measured: with the recipe's SGD, about 22 budgeted steps (each forwards the retain batch twice) and the "
    "tuned alpha, CBFT ends nearer the original than GD (L2 about 0.17 vs 0.29 on backdoor, 0.07 vs 0.18 on "
    "gaussian, seed 0); see the CBFTSGD docstring",
)


@pytest.mark.parametrize("scenario", ["gaussian", "backdoor"])
@pytest.mark.parametrize(
    "method",
    [
        WeightDistortion(),
        AlternatingSCRUB(),
        WeightDistReg(),
        CBFT(),
        WeightDistRegSGD(),
        pytest.param(CBFTSGD(), marks=CBFT_STAYS_CLOSE),
    ],
    ids=method_id,
)
def test_moves_further_from_the_original_than_gd(method, scenario: str, fixtures: dict[str, Fixture], outcomes) -> None:
    """The point of these methods: with the same budget, end further from the original (parameter L2
    distance, batch-norm statistics excluded) than plain GD on the retain set."""
    fixture = fixtures[scenario]
    gd, mine = outcomes(GradientDescent(), scenario), outcomes(method, scenario)
    assert gd.ok and mine.ok
    gd_distance, moved = (
        parameter_distance(gd.model, fixture.original),
        parameter_distance(mine.model, fixture.original),
    )
    assert moved > gd_distance, f"L2 distance {moved:.3g} not above GD's {gd_distance:.3g}"


@pytest.mark.parametrize("scenario", ["gaussian", "backdoor"])
@pytest.mark.parametrize(
    "published, ablation", [(WeightDistReg(), WeightDistRegSGD()), (CBFT(), CBFTSGD())], ids=["WeightDistReg", "CBFT"]
)
def test_published_variant_leaves_the_original_basin(
    published, ablation, scenario: str, fixtures: dict[str, Fixture], outcomes
) -> None:
    """The published two-phase methods (alternating SCRUB, then the weight-space phase with Adam) end far
    from the original: beyond its own safeguard's distance and at least 10x the single-phase SGD
    ablation's (which ends about 1 in L2 away, like fine-tuning). Measured on seed 0: WeightDistReg
    about 150-210, CBFT about 40, the safeguard alone about 14, the SGD ablations 0.1-1."""
    fixture = fixtures[scenario]
    mine, old, guard = (
        outcomes(published, scenario),
        outcomes(ablation, scenario),
        outcomes(AlternatingSCRUB(), scenario),
    )
    assert mine.ok and old.ok and guard.ok
    moved, old_moved = parameter_distance(mine.model, fixture.original), parameter_distance(old.model, fixture.original)
    safeguard_only = parameter_distance(guard.model, fixture.original)
    assert moved > 10 * old_moved, f"L2 {moved:.3g} not 10x the SGD ablation's {old_moved:.3g}"
    assert moved > safeguard_only, f"L2 {moved:.3g} not beyond the safeguard's own {safeguard_only:.3g}"


def toy_request(
    size: int, budget: int = 40, factory=None, seed: int = 0
) -> tuple[UnlearningRequest, ExampleGradientCounter]:
    counter = ExampleGradientCounter()
    gen = torch.Generator().manual_seed(seed)
    base = factory or (lambda: nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)))
    shape = (1, 8, 8) if factory is not None else (6,)
    data = torch.Generator().manual_seed(123)
    retain = ExampleSet(torch.randn(30, *shape, generator=data), torch.randint(0, 3, (30,), generator=data))
    forget = ExampleSet(torch.randn(size, *shape, generator=data), torch.randint(0, 3, (size,), generator=data))
    request = UnlearningRequest(
        forget, retain, Budget(0.1, budget), TrainingRecipe(batch_size=8, epochs=5), base, 3, CPU, seed, gen
    )
    return request, counter


@pytest.mark.parametrize("factory", [None, lambda: small_cnn((1, 8, 8), 3, [4, 4])], ids=["mlp", "bn-cnn"])
@pytest.mark.parametrize("size", [0, 1])
@pytest.mark.parametrize("method", VARIANTS, ids=method_id)
def test_methods_handle_tiny_forget_sets(method, size: int, factory, unlearn_sanely) -> None:
    """Empty and one-sample forget sets: no crash, finite weights, same architecture, data untouched,
    budget respected as the harness counts it (the CBFT midpoint forward included)."""
    request, counter = toy_request(size, factory=factory)
    with counter:
        unlearn_sanely(method, request)
    assert 0 < counter.total <= request.budget.example_gradients


@pytest.mark.parametrize("method", VARIANTS, ids=method_id)
def test_randomness_comes_from_the_request(method) -> None:
    """The global RNG does not matter: the same request seed gives the same weights, another seed other weights
    where the method draws randomness."""
    outs = []
    for global_seed, request_seed in ((1, 0), (2, 0), (3, 5)):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
        request, _ = toy_request(4, seed=request_seed, factory=None)
        torch.manual_seed(global_seed)
        outs.append(flat(method.unlearn(model, request)))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


def test_zero_budget_leaves_the_data_alone() -> None:
    """No budget: WeightDistortion still distorts (it costs nothing), the others return the model unchanged."""
    for method in METHODS:
        request, counter = toy_request(3, budget=0)
        model = request.model_factory()
        start = flat(model).clone()
        with counter:
            out = method.unlearn(model, request)
        assert counter.total == 0
        assert torch.equal(flat(out), start) != isinstance(method, WeightDistortion)


def test_adam_rate_keeps_the_authors_reach() -> None:
    """The published variants' Adam rate: the authors' lr x steps (1e-5 x 39,100) over the steps the budget buys."""
    assert reach_scaled_lr(6400, 64) == pytest.approx(0.391 / 100)
    assert reach_scaled_lr(10, 64) == pytest.approx(0.391), "a budget below one step still gets one step's rate"


def test_safeguard_runs_first_and_changes_the_result() -> None:
    """The published WeightDistReg is not its second phase alone: with the safeguard the weights differ."""
    outs = []
    for method in (WeightDistReg(), WeightDistReg(safeguard=None)):
        request, counter = toy_request(4, budget=80)
        torch.manual_seed(0)
        model = request.model_factory()
        with counter:
            outs.append(flat(method.unlearn(model, request)))
        assert counter.total == 80, "the safeguard's share is charged in full and the second phase spends the rest"
    assert not torch.equal(outs[0], outs[1])
