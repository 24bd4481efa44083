"""One numerics rule for every loop: the recipe's bf16 / channels_last / fused kernels on CUDA, fp32 on the CPU.

The CUDA paths themselves (CUDA graphs, streams, snapshots) need a GPU and are measured by
benchmarks/loop_bench.py; here: the rule, the evaluation context, and the bf16 path forced on the CPU
(bf16 autocast exists there), which must keep GUS's null distribution and stay close to fp32.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from unlearn_audit.metrics import gaussian_unlearning_scores
from unlearn_audit.protocol import ExampleSet, TrainingRecipe
from unlearn_audit.training.loops import resident_batches, train
from unlearn_audit.training.numerics import LoopNumerics, evaluating_fixture_of, evaluation_numerics
from unlearn_audit.training.relearning import attack_from_options, relearn, relearn_many

GPU_RECIPE = TrainingRecipe(optimizer="sgd", lr=0.05, batch_size=32, precision="bf16", channels_last=True)


def test_cuda_takes_the_recipes_numerics_and_the_cpu_stays_fp32() -> None:
    cuda = LoopNumerics.of(GPU_RECIPE, "cuda")
    assert (cuda.precision, cuda.channels_last, cuda.fused_optimizer) == ("bf16", True, True)
    assert cuda.optimizer_options() == {"fused": True} and cuda.memory_format == torch.channels_last
    cpu = LoopNumerics.of(GPU_RECIPE, "cpu")
    assert (cpu.precision, cpu.channels_last, cpu.fused_optimizer) == ("fp32", False, False)
    assert cpu.optimizer_options() == {} and cpu.autocast_dtype is None
    fp32_on_cuda = LoopNumerics.of(TrainingRecipe(), torch.device("cuda", 1))
    assert fp32_on_cuda.precision == "fp32" and not fp32_on_cuda.channels_last and fp32_on_cuda.fused_optimizer
    forced = LoopNumerics.of(GPU_RECIPE, "cpu", force_precision=True)
    assert forced.precision == "bf16" and not forced.channels_last  # channels_last stays a CUDA-only layout
    assert "bf16 autocast" in cuda.describe() and "channels_last" in cuda.describe()


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        LoopNumerics.of(dataclasses.replace(GPU_RECIPE, precision="fp8"), "cuda")
    with pytest.raises(ValueError, match="unknown compile mode 'fast'"):
        LoopNumerics.of(dataclasses.replace(GPU_RECIPE, compile="fast"), "cuda")


def test_the_recipes_compile_mode_applies_on_cuda_only_unless_forced() -> None:
    compiled = dataclasses.replace(GPU_RECIPE, compile="reduce-overhead")
    assert LoopNumerics.of(compiled, "cuda").compile_mode == "reduce-overhead"
    assert "compiled (reduce-overhead)" in LoopNumerics.of(compiled, "cuda").describe()
    assert (
        LoopNumerics.of(compiled, "cpu").compile_mode == "none"
        and LoopNumerics.of(GPU_RECIPE, "cuda").compile_mode == "none"
    )
    forced = LoopNumerics.of(compiled, "cpu", force_compile=True)
    assert forced.compile_mode == "reduce-overhead" and forced.precision == "fp32"
    model = _conv_model()
    assert LoopNumerics.of(GPU_RECIPE, "cpu").compiled(model) is model  # "none": the model itself


def test_evaluations_follow_the_fixture_being_evaluated() -> None:
    assert evaluation_numerics("cuda").precision == "fp32"  # outside any fixture
    with evaluating_fixture_of(GPU_RECIPE):
        assert evaluation_numerics("cuda").precision == "bf16"
        assert evaluation_numerics("cpu").precision == "fp32"
        with evaluating_fixture_of(TrainingRecipe()):
            assert evaluation_numerics("cuda").precision == "fp32"
        assert evaluation_numerics("cuda").precision == "bf16"
    assert evaluation_numerics("cuda").precision == "fp32"


def test_a_check_evaluates_in_its_fixtures_numerics(monkeypatch: pytest.MonkeyPatch) -> None:
    import unlearn_audit.checks.utility_preserved as module
    from unlearn_audit.checks import get_check

    seen: list[str] = []
    monkeypatch.setattr(module, "run", lambda ctx: seen.append(evaluation_numerics("cuda").precision) or "result")
    ctx = SimpleNamespace(fixture=SimpleNamespace(recipe=SimpleNamespace(training=GPU_RECIPE)))
    assert get_check("utility_preserved")(ctx) == "result"  # type: ignore[arg-type]
    assert seen == ["bf16"] and evaluation_numerics("cuda").precision == "fp32"


def _conv_model(seed: int = 0, conv_bias: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=conv_bias),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 4),
    ).eval()


def test_gus_under_bf16_keeps_its_null_and_stays_close_to_fp32() -> None:
    """GUS is N(0, 1) per poison for any gradient that does not depend on the secret noise, however rounded."""
    g = torch.Generator().manual_seed(1)
    n = 1500
    x, y = torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g)
    noise = torch.randn(n, 3, 8, 8, generator=g)
    model = _conv_model()
    fp32 = gaussian_unlearning_scores(model, x, y, noise)
    with evaluating_fixture_of(GPU_RECIPE, force_precision=True):
        bf16 = gaussian_unlearning_scores(model, x, y, noise)
    assert not torch.equal(bf16, fp32), "the bf16 path was not taken"
    assert abs(float(bf16.mean())) < 0.15  # se 1/sqrt(1500) = 0.026: a margin of about 6 se
    assert 0.85 < float(bf16.std()) < 1.15
    assert float(torch.corrcoef(torch.stack([bf16, fp32]))[0, 1]) > 0.9


def _data(n: int = 96, seed: int = 0) -> ExampleSet:
    g = torch.Generator().manual_seed(seed)
    return ExampleSet(torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 4, (n,), generator=g))


def test_resident_batches_are_example_set_batches() -> None:
    data = _data(70)
    ours = list(resident_batches(data.inputs, data.labels, 16, torch.Generator().manual_seed(5)))
    theirs = list(data.batches(16, generator=torch.Generator().manual_seed(5)))
    assert len(ours) == len(theirs) == 5
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(ours, theirs))


def test_budgeted_training_on_the_cpu_is_the_plain_fp32_loop() -> None:
    """`train` with a GPU recipe on the CPU: fp32, ExampleSet.batches' order, the budget cut exactly."""
    data = _data()
    trained = train(
        _conv_model().train(), data, GPU_RECIPE, generator=torch.Generator().manual_seed(3), epochs=2, max_examples=150
    )
    by_hand = _conv_model().train()
    optimizer = GPU_RECIPE.make_optimizer(by_hand.parameters())
    generator, spent = torch.Generator().manual_seed(3), 0
    for _ in range(2):
        for x, y in data.batches(GPU_RECIPE.batch_size, generator=generator):
            x, y = x[: 150 - spent], y[: 150 - spent]
            if len(y) == 0:
                break
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(by_hand(x), y).backward()
            optimizer.step()
            spent += len(y)
    assert spent == 150
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), by_hand.state_dict().values()))


def _attack():  # type: ignore[no-untyped-def]
    return attack_from_options({"steps": 9, "eval_every": 4, "window": 2, "augmentation": "flip"}, GPU_RECIPE, 96)


def _weight_norm(m: nn.Module) -> float:
    return float(sum(p.detach().double().norm() for p in m.parameters()))


def test_runs_in_lockstep_are_each_what_they_would_be_alone() -> None:
    models, datas = [_conv_model(0), _conv_model(1)], [_data(96, 0), _data(80, 1)]
    shared = datas[0]
    together = relearn_many(
        [models[0], models[1], models[0]],
        [datas[0], datas[1], shared],
        GPU_RECIPE,
        _attack(),
        seeds=[3, 4, 5],
        measures=[_weight_norm] * 3,
    )
    alone = [
        relearn(m, d, GPU_RECIPE, _attack(), seed=s, measure=_weight_norm)
        for m, d, s in zip([models[0], models[1], models[0]], [datas[0], datas[1], shared], [3, 4, 5])
    ]
    assert together == alone
    assert [s for s, _ in together[0]] == [0, 4, 8, 9]


def test_relearning_on_the_bf16_path_stays_close_to_fp32() -> None:
    attack = _attack()
    fp32 = relearn(_conv_model(), _data(), GPU_RECIPE, attack, seed=3, measure=_weight_norm)
    bf16 = relearn_many(
        [_conv_model()],
        [_data()],
        GPU_RECIPE,
        attack,
        seeds=[3],
        measures=[_weight_norm],
        numerics=LoopNumerics.of(GPU_RECIPE, "cpu", force_precision=True),
    )[0]
    assert [s for s, _ in bf16] == [s for s, _ in fp32]
    assert bf16 != fp32, "the bf16 path was not taken"
    assert all(abs(a - b) < 1e-2 * abs(b) for (_, a), (_, b) in zip(bf16, fp32))


@pytest.mark.skipif(
    shutil.which("g++") is None or os.environ.get("ATEN_CPU_CAPABILITY") == "default",
    reason="torch.compile on the CPU (Inductor) needs a C++ compiler, "
    "and its C++ does not build under ATEN_CPU_CAPABILITY=default (torch 2.13)",
)
def test_relearning_on_the_compiled_path_takes_the_same_steps_as_eager() -> None:
    """Forced on the CPU: full batches run through the compiled model, the epoch's last, smaller batch through the
    model itself (no second compilation), and the curve stays what the eager loop measures. (The model has no
    convolution bias before its batch-norm: that bias's gradient is rounding noise, which Adam's normalised step
    turns into a full-size update, different for any two kernels.)"""

    recipe = dataclasses.replace(GPU_RECIPE, precision="fp32", compile="default")
    data = _data(80)  # batches of 32, 32 and 16
    eager = relearn(_conv_model(conv_bias=False), data, recipe, _attack(), seed=3, measure=_weight_norm)
    runs: list = []
    compiled = relearn_many(
        [_conv_model(conv_bias=False)],
        [data],
        recipe,
        _attack(),
        seeds=[3],
        measures=[_weight_norm],
        numerics=LoopNumerics.of(recipe, "cpu", force_compile=True),
        runs_out=runs,
    )[0]
    assert runs[0].full_batch_model is not runs[0].model and "compiled (default)" in runs[0].describe()["numerics"]
    assert [s for s, _ in compiled] == [s for s, _ in eager]
    assert all(abs(a - b) < 1e-4 * abs(b) for (_, a), (_, b) in zip(compiled, eager)), (compiled, eager)


def test_relearn_many_needs_one_of_each_per_model() -> None:
    with pytest.raises(ValueError, match="one data set, seed and measure per model"):
        relearn_many([_conv_model()], [_data(), _data()], GPU_RECIPE, _attack(), seeds=[1], measures=[_weight_norm])
