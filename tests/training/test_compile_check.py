"""A compiled model whose gradients are wrong is refused before a loop trains through it.

The "compiled" models here are stand-ins that compute one parameter's gradient wrong on purpose (as
torch 2.13's oneDNN did for a shortcut convolution under Inductor on an AVX2-only CPU), so the tests need
no compiler and hold on any CPU; the real torch.compile path is covered by the compiled-trainer tests
of `test_numerics.py` and `profiles/test_cifar.py`, which must pass the check.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from unlearn_audit.protocol import ExampleSet, TrainingRecipe
from unlearn_audit.training.compile_check import (
    EAGER_RATIO,
    TOLERANCE,
    CompiledGradientMismatch,
    check_compiled_gradients,
    compare_gradients,
)
from unlearn_audit.training.fast import FastTrainStats, train_fast
from unlearn_audit.training.numerics import LoopNumerics
from unlearn_audit.training.relearning import attack_from_options, relearn_many

RECIPE = TrainingRecipe(optimizer="sgd", lr=0.05, batch_size=32, compile="default")
FP32 = LoopNumerics("cpu", None, False, False, "default")
BF16 = LoopNumerics("cpu", torch.bfloat16, False, False, "default")


class _ScaledGradient(torch.autograd.Function):
    """The identity forward; the gradient times `factor` backward."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, factor: float) -> torch.Tensor:  # type: ignore[no-untyped-def, override]
        ctx.factor = factor
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[no-untyped-def, override]
        return grad * ctx.factor, None


def wrong_gradient(model: nn.Module, parameter: str, factor: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """`model`'s forward, with `parameter`'s gradient multiplied by `factor` (a miscompiled kernel)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        params = {
            name: _ScaledGradient.apply(p, factor) if name == parameter else p for name, p in model.named_parameters()
        }
        return torch.func.functional_call(model, params, (x,))

    return forward


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 1, stride=2),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 4),
    ).train()


def _batch(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)


@pytest.mark.parametrize("numerics", [FP32, BF16], ids=["fp32", "bf16"])
def test_a_correct_compiled_model_passes_and_leaves_the_model_as_it_was(numerics: LoopNumerics) -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _batch()
    agreement = compare_gradients(model, wrong_gradient(model, "3.weight", 1.0), x, y, numerics)
    assert agreement.parameters == 7 and agreement.compiled_error == agreement.eager_error
    if numerics is FP32:  # fp32 is the truth itself
        assert agreement.excess == 0.0 and agreement.eager_error == 0.0
    else:  # the bf16 model is measured against fp32, and its own rounding shows, within its allowance
        assert 0 < agreement.eager_error < 0.1 and 0 < agreement.excess < 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # batch-norm statistics restored
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("numerics", [FP32, BF16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("factor", [47.0, 0.0, -1.0])
def test_a_gradient_off_by_a_factor_is_refused_naming_the_parameter(numerics: LoopNumerics, factor: float) -> None:
    model = _model()
    x, y = _batch()
    with pytest.raises(CompiledGradientMismatch, match=r"the test loop: .*'3\.weight' is \S+ of its norm away"):
        check_compiled_gradients(model, wrong_gradient(model, "3.weight", factor), x, y, numerics, loop="the test loop")


def test_rounding_sized_differences_pass_and_the_limit_is_the_stated_rule() -> None:
    """In fp32 the allowance is `TOLERANCE` of the gradient's norm: a gradient off by 0.8 of it passes, 1.2 fails."""
    model = _model()
    x, y = _batch()
    below, above = 1 + 0.8 * TOLERANCE, 1 + 1.2 * TOLERANCE
    passing = compare_gradients(model, wrong_gradient(model, "6.weight", below), x, y, FP32)
    assert passing.worst_parameter == "6.weight" and passing.compiled_error == pytest.approx(0.8 * TOLERANCE, rel=1e-4)
    assert passing.excess == pytest.approx(0.8, rel=1e-4)
    failing = compare_gradients(model, wrong_gradient(model, "6.weight", above), x, y, FP32)
    assert failing.excess == pytest.approx(1.2, rel=1e-4)
    bf16 = compare_gradients(model, wrong_gradient(model, "6.weight", above), x, y, BF16)
    assert bf16.eager_error > 0 and bf16.excess < failing.excess  # bf16's own rounding widens the allowance
    assert bf16.excess == pytest.approx(bf16.compiled_error / (EAGER_RATIO * bf16.eager_error + TOLERANCE))


def test_a_non_finite_compiled_gradient_is_refused() -> None:
    model = _model()
    x, y = _batch()
    agreement = compare_gradients(model, wrong_gradient(model, "0.weight", math.nan), x, y, FP32)
    assert agreement.worst_parameter == "0.weight" and math.isnan(agreement.excess)
    with pytest.raises(CompiledGradientMismatch, match=r"'0\.weight' is (nan|inf) of its norm"):
        check_compiled_gradients(model, wrong_gradient(model, "0.weight", math.inf), x, y, FP32, loop="a loop")


def test_a_model_whose_own_gradient_is_not_finite_is_not_blamed_on_the_compiler() -> None:
    model = _model()
    with torch.no_grad():
        model[6].bias.fill_(math.inf)
    x, y = _batch()
    with pytest.raises(ValueError, match=r"the eager model's own fp32 gradient of '\S+' is not finite"):
        check_compiled_gradients(model, model, x, y, FP32, loop="a loop")


def _miscompile(monkeypatch: pytest.MonkeyPatch, parameter: str, factor: float) -> None:
    """`LoopNumerics.compiled` returns a model with one wrong gradient wherever a mode is asked for."""

    def compiled(self: LoopNumerics, model: nn.Module, *, own_cuda_graphs: bool = True) -> object:
        return model if self.compile_mode == "none" else wrong_gradient(model, parameter, factor)

    monkeypatch.setattr(LoopNumerics, "compiled", compiled)


def _data(n: int) -> ExampleSet:
    return ExampleSet(*_batch(n, seed=1))


def test_the_fast_trainer_refuses_a_miscompiled_model_before_its_first_step(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = dataclasses.replace(RECIPE, trainer="fast", epochs=1)
    _miscompile(monkeypatch, "3.weight", 47.0)
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CompiledGradientMismatch, match="the fast trainer: under torch.compile"):
        train_fast(model, _data(64), recipe, generator=torch.Generator().manual_seed(0), force_compile=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # not one step taken


def test_the_fast_trainer_records_the_check_of_a_compiled_run(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = dataclasses.replace(RECIPE, trainer="fast", epochs=1)
    _miscompile(monkeypatch, "3.weight", 1 + TOLERANCE / 2)  # within the allowance: trains, and says how close it came
    stats: list[FastTrainStats] = []
    train_fast(_model(), _data(64), recipe, generator=torch.Generator().manual_seed(0), stats=stats, force_compile=True)
    assert stats[0].compiled_gradient_excess == pytest.approx(0.5, rel=1e-3)
    eager: list[FastTrainStats] = []
    train_fast(_model(), _data(64), recipe, generator=torch.Generator().manual_seed(0), stats=eager)
    assert eager[0].compiled_gradient_excess is None


def test_the_relearning_attack_refuses_a_miscompiled_model(monkeypatch: pytest.MonkeyPatch) -> None:
    attack = attack_from_options({"steps": 4, "eval_every": 2, "window": 1}, RECIPE, 64)
    forced = LoopNumerics.of(RECIPE, "cpu", force_compile=True)
    _miscompile(monkeypatch, "6.bias", 0.0)
    with pytest.raises(CompiledGradientMismatch, match="the relearning attack: .*'6.bias'"):
        relearn_many([_model()], [_data(64)], RECIPE, attack, seeds=[0], measures=[lambda m: 0.0], numerics=forced)
    _miscompile(monkeypatch, "6.bias", 1.0)
    runs: list = []
    relearn_many(
        [_model()], [_data(64)], RECIPE, attack, seeds=[0], measures=[lambda m: 0.0], numerics=forced, runs_out=runs
    )
    assert runs[0].describe()["compiled_gradient_excess"] == 0.0
