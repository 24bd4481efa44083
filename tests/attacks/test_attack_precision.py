"""`[attack] precision`: the attacks' own loops (brewing, GradPC, canceling) in bf16 autocast on CUDA, fp32 elsewhere.

The bf16 path is exercised on the CPU with `force_precision` (CPU autocast), on a batch-norm CNN in eval mode,
whose double-backward steps are what a GPU build runs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.attacks.base import BuildContext
from unlearn_audit.attacks.gradient_canceling import gradpc, make_gradient_canceling
from unlearn_audit.attacks.witches_brew import brew_poisons
from unlearn_audit.profiles.models import small_cnn
from unlearn_audit.protocol import TrainingRecipe
from unlearn_audit.scenarios.recipes import load_profile_recipes
from unlearn_audit.training.numerics import LoopNumerics

N, SHAPE, CLASSES = 64, (1, 8, 8), 4
FP32 = LoopNumerics.of(TrainingRecipe(precision="fp32"), "cpu")
BF16 = LoopNumerics.of(TrainingRecipe(precision="bf16"), "cpu", force_precision=True)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand((N, *SHAPE), generator=gen(1)), torch.arange(N) % CLASSES


@pytest.fixture
def cnn(data) -> nn.Module:
    """A batch-norm CNN trained a little (so its batch-norm statistics and gradients are not those of an init)."""
    torch.manual_seed(0)
    model = small_cnn(SHAPE, CLASSES, channels=[4, 8])
    x, y = data
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def context(precision: object | None, force: bool = False, device: str = "cpu") -> BuildContext:
    recipe = load_profile_recipes("tiny")["gradient_canceling"]
    attack = {**recipe.attack, **({"precision": precision} if precision is not None else {})}
    return BuildContext(
        recipe=dataclasses.replace(recipe, attack=attack),
        split=None,  # type: ignore[arg-type]
        seed=0,
        generator=gen(0),
        device=device,
        progress=None,
        train=None,  # type: ignore[arg-type]
        model_factory=None,  # type: ignore[arg-type]
        force_precision=force,
    )


def test_attack_numerics_are_fp32_unless_a_recipe_asks_for_bf16_on_cuda() -> None:
    assert context(None).attack_numerics().precision == "fp32"  # the default: the papers' numerics
    assert context("bf16").attack_numerics().precision == "fp32"  # a CPU computes in fp32 whatever the recipe says
    assert context("bf16", force=True).attack_numerics().precision == "bf16"  # CPU measurements of the GPU path
    assert context("fp32", force=True).attack_numerics().precision == "fp32"
    cuda = context("bf16", device="cuda").attack_numerics()  # no CUDA needed to decide the rule
    assert (
        cuda.precision == "bf16"
        and cuda.channels_last == load_profile_recipes("tiny")["gaussian"].training.channels_last
    )
    cifar = load_profile_recipes("cifar10-resnet18")["witches_brew"]
    assert LoopNumerics.of(dataclasses.replace(cifar.training, precision="bf16"), "cuda").channels_last
    with pytest.raises(ValueError, match=r"\[attack\] precision"):
        context("fp16").attack_numerics()


def test_fp32_numerics_change_nothing(cnn, data) -> None:
    """On a CPU the attacks compute exactly as without numerics: a CPU profile's fixtures do not move."""
    x, y = data
    base = torch.nonzero(y == 2).flatten()[:6]
    args = dict(
        surrogates=[cnn],
        base_x=x[base],
        base_y=y[base],
        target_x=x[:1],
        adversarial_y=torch.tensor([2]),
        epsilon=16 / 255,
        steps=6,
        restarts=1,
    )
    plain, _ = brew_poisons(**args, generator=gen(0))  # type: ignore[arg-type]
    same, _ = brew_poisons(**args, generator=gen(0), numerics=FP32)  # type: ignore[arg-type]
    assert torch.equal(plain, same)
    a = make_gradient_canceling(gradpc(cnn, x, y, 0.5, steps=3), x, y, 6, gen(0), steps=6)
    b = make_gradient_canceling(gradpc(cnn, x, y, 0.5, steps=3, numerics=FP32), x, y, 6, gen(0), steps=6, numerics=FP32)
    assert torch.equal(a[0], b[0]) and a[2].objective_history == b[2].objective_history


def test_brewing_in_bf16_still_brews(cnn, data) -> None:
    x, y = data
    base = torch.nonzero(y == 2).flatten()[:6]
    poisoned, info = brew_poisons(
        [cnn], x[base], y[base], x[:1], torch.tensor([2]), 16 / 255, 30, 1, gen(0), numerics=BF16
    )
    curve = info["loss_curve"]
    assert poisoned.dtype == torch.float32 and all(0 <= v <= 2 for v in curve)
    assert curve[-1] < 0.8 * curve[0], curve  # fp32 brews this from about 1.0 to about 0.3
    assert (poisoned - x[base]).abs().max() <= 16 / 255 + 1e-6
    fp32, _ = brew_poisons([cnn], x[base], y[base], x[:1], torch.tensor([2]), 16 / 255, 30, 1, gen(0))
    assert not torch.equal(poisoned, fp32)  # the bf16 path was taken


def test_gradient_canceling_in_bf16_still_cancels(cnn, data) -> None:
    x, y = data
    target = gradpc(cnn, x, y, 0.5, steps=5, numerics=BF16)
    assert target.training is False and all(p.dtype == torch.float32 for p in target.parameters())
    px, _, secret = make_gradient_canceling(target, x, y, 8, gen(0), steps=60, lr=0.05, numerics=BF16)
    assert px.dtype == torch.float32
    # 8 poisons against 64 clean images cannot cancel much here (the clean gradient alone leaves about 205): fp32
    # goes from 243 to 195, bf16 from 245 to 192.
    assert secret.objective_final < 0.9 * secret.objective_initial, secret.objective_history
    _, _, fp32 = make_gradient_canceling(gradpc(cnn, x, y, 0.5, steps=5), x, y, 8, gen(0), steps=60, lr=0.05)
    assert secret.objective_final < 1.1 * fp32.objective_final


def test_a_cpu_build_ignores_the_attack_precision_unless_forced() -> None:
    """`tiny` with `[attack] precision = "bf16"` builds the same fixture on a CPU; forced, the attack runs in bf16."""
    from unlearn_audit.scenarios.build import build_once
    from unlearn_audit.scenarios.recipes import parse_recipe

    text = """
[scenario]
name = "gc_small"
checks = ["indiscriminate_restored"]
build_attempts = 1
[data]
source = "digits"
image_size = 8
[model]
architecture = "mlp"
hidden = [32]
[training]
epochs = 2
[attack]
kind = "gradient_canceling"
poison_fraction = 0.02
radius = 0.5
gradpc_steps = 3
canceling_steps = 10
precision = "{precision}"
"""
    fp32 = build_once(parse_recipe("tiny", text.format(precision="fp32")), 0)
    bf16 = build_once(parse_recipe("tiny", text.format(precision="bf16")), 0)
    forced = build_once(parse_recipe("tiny", text.format(precision="bf16")), 0, force_precision=True)
    assert fp32.meta["attack"]["numerics"] == bf16.meta["attack"]["numerics"] == "fp32"
    assert torch.equal(fp32.tensors["train_x"], bf16.tensors["train_x"])
    assert forced.meta["attack"]["numerics"] == "bf16 autocast"
    assert not torch.equal(fp32.tensors["train_x"], forced.tensors["train_x"])


def test_a_recipe_with_an_unknown_attack_precision_is_refused_when_it_loads() -> None:
    from unlearn_audit.scenarios.recipes import parse_recipe

    text = """
[scenario]
name = "bad"
checks = ["targeted_removed"]
[data]
source = "digits"
[model]
architecture = "mlp"
[training]
epochs = 1
[attack]
kind = "witches_brew"
precision = "fp16"
"""
    with pytest.raises(
        ValueError, match=r"bad\.toml: \[attack\] precision must be one of \('fp32', 'bf16'\), got 'fp16'"
    ):
        parse_recipe("tiny", text, source="bad.toml")
