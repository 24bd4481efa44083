"""Gradient Canceling: an indiscriminate, model-targeted poisoning attack (Pawelczyk et al., Sec. 4.2
and App. A.1.3, after Lu et al. 2023, 2024).

The attack has two steps.

1. **Target parameters** (GradPC, Sun et al. 2020): starting from a model trained on the clean data,
   ascend the training loss with normalised gradient steps, projecting back onto the L2 ball of
   radius `r` around the clean parameters after each step. The result is a model with poor
   accuracy that is still close to a trained one.
2. **Poisons** (gradient canceling): choose `k` training images (with their labels) as starting
   points and optimise the *inputs* so that the gradient of the training objective on clean +
   poison data vanishes at the target parameters:

       minimise over the poisons P:  || (sum_{clean} grad l(w_tgt; x, y) + sum_{P} grad l(w_tgt; p, y)) / (n + k)
                                        + weight_decay * w_tgt ||^2

   so that the target is a stationary point of training on the poisoned set, one that gradient
   descent from scratch can converge to. The clean sum is a constant; only the poisons move.
   Following Pawelczyk et al. the perturbation is unbounded (with poisons clamped to the image
   range the attack had no effect on the `tiny` profile at any radius tried).

On the `tiny` profile (MLP 1024-256-10, 22-43 poisons) the objective falls only 2-20x (k poisons
cannot cancel a full-rank clean gradient), and training from scratch on the poisoned set does not
settle at the target: test accuracy swings from epoch to epoch and the weights often grow by
orders of magnitude. The accuracy loss is real and retraining without the poisons removes it,
which is what an unlearning audit needs; fixture validation checks it for every seed.

Everything here is plain torch, usable without pytest; randomness comes only from the
`torch.Generator` passed in, so the same seed gives the same poisons. Gradients are taken with
the model in eval mode (batch-norm running statistics, no dropout).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.attacks.base import Attack, BuildContext, Memo, PoisonedTrainingSet, PoisonMeasurement, no_memo
from unlearn_audit.metrics import correct
from unlearn_audit.protocol import ExampleSet
from unlearn_audit.stats import Proportion, excess_test
from unlearn_audit.training.numerics import LoopNumerics, forward_logits

StepCallback = Callable[[int, int, float], None]
"""Called now and then with (steps done, steps total, seconds elapsed)."""


@dataclass(frozen=True)
class GradientCancelingPoison:
    """The attack's secret and its diagnostics."""

    base_indices: torch.Tensor  # long, (k,): training images the poisons started from (sorted)
    base_inputs: torch.Tensor  # float, (k, *input_shape): those images, before optimisation
    labels: torch.Tensor  # long, (k,): the poisons' labels (those of the base images)
    objective_initial: float  # canceling objective at the start (poisons = base images)
    objective_final: float  # and after optimisation (the best value reached)
    clean_objective: float  # the objective if the poisons had zero gradient (clean gradient alone)
    objective_history: list[float]  # every `record_every` steps


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def _flat_distance(params: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float((p.detach() - r).pow(2).sum()) for p, r in zip(params, reference)))


def loss_gradient(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 1024,
    reduction: str = "sum",
    numerics: LoopNumerics | None = None,
) -> list[torch.Tensor]:
    """Gradient of the cross-entropy over (inputs, labels) w.r.t. the model's parameters ("sum" or "mean"),
    forward passes in `numerics` (None: plain fp32), the sum accumulated in fp32."""
    params = _params(model)
    total = [torch.zeros_like(p) for p in params]
    for i in range(0, len(labels), batch_size):
        logits = forward_logits(model, inputs[i : i + batch_size], numerics)
        loss = F.cross_entropy(logits, labels[i : i + batch_size], reduction="sum")
        for t, g in zip(total, torch.autograd.grad(loss, params)):
            t += g
    if reduction == "mean":
        total = [t / max(len(labels), 1) for t in total]
    return total


def gradpc(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    radius: float,
    steps: int = 20,
    step_size: float | None = None,
    on_step: StepCallback | None = None,
    numerics: LoopNumerics | None = None,
) -> nn.Module:
    """GradPC target parameters: a copy of `model` within L2 distance `radius` that has a high training loss.

    Projected normalised gradient ascent on the mean cross-entropy over (inputs, labels):
    w <- P(w + step_size * g / ||g||), P the projection onto {||w - w_clean|| <= radius} (all
    parameters as one vector). `step_size` defaults to radius / 4, so the ball's surface is
    reached in a few steps and the rest of the steps move along it. Deterministic (full batch).
    `numerics`: `loss_gradient`'s.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    target = copy.deepcopy(model).eval()
    params = _params(target)
    clean = [p.detach().clone() for p in params]
    eta = radius / 4 if step_size is None else float(step_size)
    start = time.perf_counter()
    for step in range(steps):
        with torch.enable_grad():
            grad = loss_gradient(target, inputs, labels, reduction="mean", numerics=numerics)
        norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grad))
        if norm == 0:
            break
        with torch.no_grad():
            for p, g in zip(params, grad):
                p.add_(g, alpha=eta / norm)
            dist = _flat_distance(params, clean)
            if dist > radius:
                shrink = radius / dist
                for p, c in zip(params, clean):
                    p.copy_(c + (p - c) * shrink)
        if on_step is not None:
            on_step(step + 1, steps, time.perf_counter() - start)
    for p in target.parameters():
        p.grad = None
    return target


def canceling_objective(
    target: nn.Module,
    clean_grad_sum: list[torch.Tensor],
    num_clean: int,
    poison_x: torch.Tensor,
    poison_y: torch.Tensor,
    weight_decay: float = 0.0,
    create_graph: bool = False,
    numerics: LoopNumerics | None = None,
) -> torch.Tensor:
    """|| (clean gradient sum + poison gradient sum) / (n + k) + weight_decay * w ||^2 at the target parameters.

    With `create_graph`, the result is differentiable with respect to `poison_x`. `numerics`: the forward
    pass's (None: plain fp32); the gradients and the norm are fp32.
    """
    params = _params(target)
    loss = F.cross_entropy(forward_logits(target, poison_x, numerics), poison_y, reduction="sum")
    poison_grad = torch.autograd.grad(loss, params, create_graph=create_graph)
    n = num_clean + len(poison_y)
    total = poison_x.new_zeros(())
    for p, gc, gp in zip(params, clean_grad_sum, poison_grad):
        total = total + ((gc + gp) / n + weight_decay * p.detach()).pow(2).sum()
    return total


def make_gradient_canceling(
    target: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_poisons: int,
    generator: torch.Generator,
    *,
    steps: int = 1000,
    lr: float = 0.1,
    weight_decay: float = 0.0,
    clamp: tuple[float, float] | None = None,
    record_every: int = 50,
    on_step: StepCallback | None = None,
    numerics: LoopNumerics | None = None,
) -> tuple[torch.Tensor, torch.Tensor, GradientCancelingPoison]:
    """Return (poison inputs, poison labels, secret): `num_poisons` points that cancel the gradient at `target`.

    The poisons start from randomly chosen training images (drawn with `generator`) and keep
    their labels; their inputs are optimised with Adam (`lr`, `steps`) on `canceling_objective`,
    unbounded unless `clamp` = (low, high) is given. The poisons with the lowest objective seen
    are returned. `weight_decay` should be the victim's (its training objective's gradient
    includes weight_decay * w). `target` is not modified. `numerics`: the forward passes' (None: plain fp32).
    """
    n = len(train_y)
    if not 0 < num_poisons <= n:
        raise ValueError(f"num_poisons must be in [1, {n}], got {num_poisons}")
    base = torch.randperm(n, generator=generator)[:num_poisons].sort().values
    base_x = train_x[base].clone()
    labels = train_y[base].clone()
    target = copy.deepcopy(target).eval()
    for p in target.parameters():
        p.requires_grad_(True)
    with torch.enable_grad():
        clean_grad = [g.detach() for g in loss_gradient(target, train_x, train_y, numerics=numerics)]
    n_clean = n

    def objective(x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        return canceling_objective(target, clean_grad, n_clean, x, labels, weight_decay, create_graph, numerics)

    with torch.enable_grad():
        clean_only = _clean_only(clean_grad, n_clean + num_poisons, target, weight_decay)
        poison = base_x.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([poison], lr=lr)
        best_value, best = float("inf"), base_x.clone()
        history: list[float] = []
        initial = float("nan")
        start = time.perf_counter()
        for step in range(steps + 1):
            optimizer.zero_grad(set_to_none=True)
            value = objective(poison, create_graph=True)
            v = float(value.detach())
            if step == 0:
                initial = v
            if math.isfinite(v) and v < best_value:
                best_value, best = v, poison.detach().clone()
            if step % record_every == 0 or step == steps:
                history.append(v)
            if step == steps:
                break
            (grad,) = torch.autograd.grad(value, poison)
            poison.grad = grad
            optimizer.step()
            if clamp is not None:
                with torch.no_grad():
                    poison.clamp_(*clamp)
            if on_step is not None and ((step + 1) % record_every == 0 or step + 1 == steps):
                on_step(step + 1, steps, time.perf_counter() - start)
    secret = GradientCancelingPoison(base, base_x, labels.clone(), initial, best_value, clean_only, history)
    return best, labels, secret


def _clean_only(clean_grad: list[torch.Tensor], n: int, target: nn.Module, weight_decay: float) -> float:
    return float(
        sum(float((g / n + weight_decay * p.detach()).pow(2).sum()) for g, p in zip(clean_grad, _params(target)))
    )


@dataclass(frozen=True)
class GradientCancelingResult:
    """Both steps of the attack: the GradPC target, the poisons, and what it took."""

    target: nn.Module
    poison_x: torch.Tensor
    poison_y: torch.Tensor
    secret: GradientCancelingPoison
    diagnostics: dict  # JSON-able: target distance, objective values, poison range, seconds per step


def gradient_canceling_attack(
    clean: nn.Module,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_poisons: int,
    radius: float,
    generator: torch.Generator,
    *,
    gradpc_steps: int = 20,
    canceling_steps: int = 1000,
    lr: float = 0.1,
    weight_decay: float = 0.0,
    clamp: tuple[float, float] | None = None,
    on_stage: Callable[[str, int, int, float], None] | None = None,
    numerics: LoopNumerics | None = None,
) -> GradientCancelingResult:
    """GradPC target from the attacker's `clean` model, then gradient-canceling poisons for it.

    `on_stage(stage, done, total, seconds)` reports progress of the stages "GradPC target" and
    "gradient-canceling poison". `numerics` (`BuildContext.attack_numerics`; None: plain fp32): both stages'
    forward passes.
    """

    def cb(stage: str) -> StepCallback | None:
        return (lambda done, total, s: on_stage(stage, done, total, s)) if on_stage else None

    t0 = time.perf_counter()
    target = gradpc(clean, train_x, train_y, radius, steps=gradpc_steps, on_step=cb("GradPC target"), numerics=numerics)
    t1 = time.perf_counter()
    poison_x, poison_y, secret = make_gradient_canceling(
        target,
        train_x,
        train_y,
        num_poisons,
        generator,
        steps=canceling_steps,
        lr=lr,
        weight_decay=weight_decay,
        clamp=clamp,
        on_step=cb("gradient-canceling poison"),
        numerics=numerics,
    )
    t2 = time.perf_counter()
    diagnostics = {
        "num_poisons": num_poisons,
        "target_distance": _flat_distance(_params(target), [p.detach() for p in _params(clean)]),
        "objective_initial": secret.objective_initial,
        "objective_final": secret.objective_final,
        "objective_clean_only": secret.clean_objective,
        "objective_history": secret.objective_history,
        "poison_min": float(poison_x.min()),
        "poison_max": float(poison_x.max()),
        "poison_norm_max": float(poison_x.flatten(1).norm(dim=1).max()),
        "seconds": {"gradpc": t1 - t0, "canceling": t2 - t1},
    }
    return GradientCancelingResult(target, poison_x, poison_y, secret, diagnostics)


class GradientCancelingAttack(Attack):
    """`kind = "gradient_canceling"` (Pawelczyk et al. A.1.3): the attacker trains its own clean model, and
    `gradient_canceling_attack` turns it into a GradPC target and poisons that cancel the gradient there.

    The poisons are appended to the clean training set and are the forget set; `clean_train_x`
    holds, for poison rows, the training images the poisons started from. Poison metric: clean
    test error (the damage an indiscriminate poison does). `[attack] precision` ("fp32" by default, or
    "bf16") sets the numerics of GradPC and the canceling loop on CUDA (`BuildContext.attack_numerics`).
    """

    kind = "gradient_canceling"
    poison_name = "clean test error"
    checks = ("indiscriminate_restored", "utility_preserved", "budget_respected")

    def poison(self, ctx: BuildContext) -> PoisonedTrainingSet:
        recipe, split, device, progress = ctx.recipe, ctx.split, ctx.device, ctx.progress
        a = recipe.attack
        n = len(split.train_y)
        t0 = time.perf_counter()
        clean = ctx.train(ExampleSet(split.train_x, split.train_y), "attacker", "attacker's clean model")
        clean_seconds = time.perf_counter() - t0
        numerics = ctx.attack_numerics()
        attack = gradient_canceling_attack(
            numerics.prepare_model(clean),
            split.train_x.to(device),
            split.train_y.to(device),
            max(1, round(float(a["poison_fraction"]) * n)),
            float(a["radius"]),
            ctx.generator,
            gradpc_steps=int(a.get("gradpc_steps", 20)),
            canceling_steps=int(a.get("canceling_steps", 1000)),
            lr=float(a.get("canceling_lr", 0.1)),
            weight_decay=float(recipe.training.weight_decay),
            # `poison_bound` B (absent: unbounded, as in the paper): poisons stay in [-B, B].
            clamp=(-float(a["poison_bound"]), float(a["poison_bound"])) if "poison_bound" in a else None,
            on_stage=progress,
            numerics=numerics,
        )
        k = len(attack.poison_y)
        poison_x, poison_y = attack.poison_x.cpu(), attack.poison_y.cpu()
        meta = {
            "attacker_clean_test_accuracy": correct(clean, split.test_x, split.test_y).float().mean().item(),
            "target_test_accuracy": correct(attack.target, split.test_x, split.test_y).float().mean().item(),
            **attack.diagnostics,
            "numerics": numerics.describe(),
        }
        meta["seconds"]["attacker_clean"] = clean_seconds
        return PoisonedTrainingSet(
            train_x=torch.cat([split.train_x, poison_x]),
            train_y=torch.cat([split.train_y, poison_y]),
            forget=torch.arange(n, n + k),
            clean_train_x=torch.cat([split.train_x, attack.secret.base_inputs.cpu()]),
            secret={"base_indices": attack.secret.base_indices.cpu()},
            extra_weights={
                "target": {name: v.detach().cpu().clone() for name, v in attack.target.state_dict().items()}
            },
            meta=meta,
        )

    def validate(self, recipe, original, retrain, tensors):  # type: ignore[no-untyped-def]
        test_x, test_y = tensors["test_x"], tensors["test_y"]
        opts = recipe.options("indiscriminate_restored")
        needed = float(opts.get("min_accuracy_drop", 0.10))
        max_ratio = float(opts.get("max_norm_ratio", 100.0))
        margin, alpha = float(opts.get("margin", 0.05)), float(opts.get("alpha", 0.01))
        acc = {
            name: Proportion(int(correct(m, test_x, test_y).sum()), len(test_y))
            for name, m in (("original", original), ("retrain", retrain))
        }
        drop = excess_test(acc["retrain"], acc["original"], margin, alpha)  # the check's rule, applied to the original
        # Unbounded poisons can make training diverge; a non-finite original cannot stand for anything.
        finite = all(bool(torch.isfinite(p).all()) for p in original.parameters())
        norms = {
            name: sum(float(p.detach().double().pow(2).sum()) for p in m.parameters()) ** 0.5
            for name, m in (("original", original), ("retrain", retrain))
        }
        return {
            "accuracy_drop": drop.difference,
            "accuracy_drop_lower_bound": drop.lower_bound,
            "original_parameter_norm": norms["original"],
            "retrain_parameter_norm": norms["retrain"],
            "norm_ratio": norms["original"] / norms["retrain"] if norms["retrain"] else float("inf"),
            # An exploded original (weight norm 1e5 against retrain's 13) is not a working low-accuracy model:
            # methods cannot move it and the scenario measures numerical blow-up, not the paper's mechanism.
            "effective": bool(
                finite
                and norms["original"] <= max_ratio * norms["retrain"]
                and drop.difference >= needed
                and drop.rejected
            ),
            "rule": (
                f"the poisoned original is finite, its weight norm at most {max_ratio:g}x retrain's, its test "
                f"accuracy >= {needed:g} below retrain's and it fails indiscriminate_restored "
                f"(gap lower bound > {margin:g} at alpha={alpha:g})"
            ),
        }

    def measure_poison(self, fixture, model, held_out=None, memo: Memo = no_memo) -> PoisonMeasurement:  # type: ignore[no-untyped-def]
        t = fixture.tensors
        errors = ~correct(model, t["test_x"], t["test_y"])
        p = Proportion(int(errors.sum()), len(errors))
        return PoisonMeasurement(p.value, p.stderr, p.trials, "proportion", p.successes)
