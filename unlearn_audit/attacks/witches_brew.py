"""Witches' Brew: clean-label targeted poisoning by gradient matching (Geiping et al., ICLR 2021).

The attacker wants a model trained on the poisoned set to assign one (or a few) chosen test
images, the *targets*, to an *adversarial class*. It takes a small budget of training images of
that class, keeps their (correct) labels, and adds to each a perturbation bounded in L-inf by
epsilon. The perturbations are optimised so that, on surrogate models, the parameter gradient of
the training loss on the poisons points in the same direction as the gradient of the
*adversarial* loss (cross-entropy of the targets with the adversarial label). Training then
descends the adversarial loss while it fits the poisons, which look like ordinary, correctly
labelled images.

What the paper specifies (CIFAR-10, ResNet-18): a budget of 1% to 1.5% of the training set,
epsilon 16/255, 240 steps of signed Adam with step-decay, 8 random restarts keeping the best
loss, the cosine "alignment" loss summed over all parameters, and (optionally) an ensemble of
surrogates. Pawelczyk et al. use it as the targeted poison in their unlearning audit.

What `tiny` needs (measured when the scenario was prototyped): random test targets of the digits
data sit far from the decision boundary, and brews against them never succeeded even when the
alignment loss reached 0.03-0.1. Targets that a clean model classifies correctly with the
*smallest logit margin* (`select_low_margin_targets`), a larger budget (about 5%), epsilon
32/255 and an ensemble of 2 surrogates fool fresh-init victims about half the time. Nothing here
is digits-specific: everything works on N x C x H x W tensors with values in [0, 1].

What `cifar10-resnet18` uses (the recipe's `[attack]` keys; their defaults are `tiny`'s behaviour):
the threat model of the paper and of Geiping et al.'s code (`targets = "random"`,
`select_random_targets`: a random target class, a random test image of it, a random intended class,
poisons drawn from the intended class), brewing through the victim's own crop+flip
(`brew_augmentation`, applied to the poisons afresh at every step, differentiably), the reference's
8 restarts and its signed-Adam step size (`lr`). Low-margin targets are only the recorded fallback
when the random target fails validation (`target_fallback`, see `WitchesBrewAttack.fallback`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.attacks.base import Attack, PoisonedTrainingSet, PoisonMeasurement, no_memo
from unlearn_audit.protocol import AUGMENTATIONS, ExampleSet
from unlearn_audit.stats import Proportion
from unlearn_audit.training.fast import augment
from unlearn_audit.training.loops import predict
from unlearn_audit.training.numerics import LoopNumerics, forward_logits

if TYPE_CHECKING:
    from unlearn_audit.attacks.base import BuildContext, Memo
    from unlearn_audit.scenarios.fixture import Fixture
    from unlearn_audit.scenarios.recipes import ScenarioRecipe


@dataclass(frozen=True)
class WitchesBrewPoison:
    """The attack's secret. Labels are untouched (clean-label), so only inputs are poisoned."""

    indices: torch.Tensor  # long, (k,): poisoned training indices, all of the adversarial class
    delta: torch.Tensor  # float, (k, *input_shape): the perturbation added to each poison
    target_indices: torch.Tensor  # long, (t,): indices of the targets in the test set
    adversarial_class: int
    epsilon: float  # L-inf bound on delta
    final_loss: float  # alignment loss of the kept restart, averaged over the surrogate ensemble


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def _adversarial_gradient(
    model: nn.Module, target_x: torch.Tensor, adversarial_y: torch.Tensor, numerics: LoopNumerics | None = None
) -> list[torch.Tensor]:
    """Gradient of CE(model(target_x), adversarial_y): fixed during brewing, so no graph is kept."""
    loss = F.cross_entropy(forward_logits(model, target_x, numerics), adversarial_y)
    return [g.detach() for g in torch.autograd.grad(loss, _params(model))]


def _matching_loss(
    model: nn.Module,
    poison_x: torch.Tensor,
    poison_y: torch.Tensor,
    target_grad: list[torch.Tensor],
    numerics: LoopNumerics | None = None,
) -> torch.Tensor:
    """1 - cosine between the poison gradient (differentiable w.r.t. poison_x) and `target_grad`.

    Inner product and norms are summed over all parameters, as in the paper: one cosine for the
    whole parameter vector, not an average of per-layer cosines.
    """
    loss = F.cross_entropy(forward_logits(model, poison_x, numerics), poison_y)
    poison_grad = torch.autograd.grad(loss, _params(model), create_graph=True)
    dot = sum((pg * tg).sum() for pg, tg in zip(poison_grad, target_grad))
    poison_norm = cast(torch.Tensor, sum(pg.pow(2).sum() for pg in poison_grad)).sqrt()
    target_norm = cast(torch.Tensor, sum(tg.pow(2).sum() for tg in target_grad)).sqrt()
    return 1 - dot / (poison_norm * target_norm).clamp_min(1e-12)


def gradient_matching_loss(
    model: nn.Module,
    poison_x: torch.Tensor,
    poison_y: torch.Tensor,
    target_x: torch.Tensor,
    adversarial_y: torch.Tensor,
) -> torch.Tensor:
    """The Witches' Brew alignment loss, in [0, 2]; 0 when the two gradients point the same way.

    The poison side is built with `create_graph=True`, so the result is differentiable w.r.t.
    `poison_x`. The model is used in whatever mode it is in (`brew_poisons` puts surrogates in
    eval mode, so batch norm uses running statistics and the loss does not depend on how the
    poisons are batched).
    """
    return _matching_loss(model, poison_x, poison_y, _adversarial_gradient(model, target_x, adversarial_y))


def _check_brew_args(epsilon: float, steps: int, restarts: int, surrogates: list[nn.Module]) -> None:
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if not surrogates:
        raise ValueError("need at least one surrogate model")


def brew_poisons(
    surrogates: list[nn.Module],
    base_x: torch.Tensor,
    base_y: torch.Tensor,
    target_x: torch.Tensor,
    adversarial_y: torch.Tensor,
    epsilon: float,
    steps: int,
    restarts: int,
    generator: torch.Generator,
    lr: float = 0.1,
    augmentation: str = "none",
    numerics: LoopNumerics | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Optimise perturbations of `base_x` that minimise the alignment loss; return (poisoned_x, info).

    Optimiser: *signed Adam*, as in the paper's reference implementation: the gradient w.r.t.
    delta is replaced by its sign before an Adam step, and after each step delta is projected
    back onto the L-inf ball of radius `epsilon` and onto the box that keeps `base_x + delta`
    in [0, 1]. `lr` is relative to epsilon (step size `lr * epsilon`, as the reference code
    scales its tau), so one setting serves any epsilon; it decays by 10x at 3/8, 5/8 and 7/8 of
    the steps, as in the paper.

    The loss is averaged over the surrogate ensemble. Surrogates are put in eval mode while
    brewing (restored afterwards) and their parameters are never changed; the target gradient
    of each is computed once. Each of the `restarts` starts from delta uniform in the epsilon
    ball, drawn from `generator`; the restart with the lowest final loss is kept.

    `augmentation` ("none", "flip" or "crop_flip": the fast trainer's `augment`, the very ops the
    victim trains with): at every step the poisons `base_x + delta` are augmented afresh before the
    poison gradient is taken, as in the reference implementation, so the brew works for the images
    the victim actually sees. Random crop is zero-padding plus a gather and flip is `torch.where`,
    so the gradient reaches delta through them. The draws come from a generator on the poisons'
    device seeded from `generator` (one draw, taken only when augmenting, so "none" leaves
    `generator`'s stream as it was). The target gradient stays un-augmented, and the final loss
    that ranks the restarts is taken without augmentation, so restarts are compared on one footing.

    `numerics` (`BuildContext.attack_numerics`; None: plain fp32): the autocast precision and memory format
    of the surrogates' forward passes; gradients, the cosine and delta stay fp32.

    info: "restart_losses" (final loss of each restart), "best_restart", "loss_curve" (the
    kept restart's loss before each step, on augmented poisons when augmenting, then after the
    last one: `steps + 1` values),
    "final_loss".
    """
    _check_brew_args(epsilon, steps, restarts, surrogates)
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"unknown brew augmentation {augmentation!r}; known: {AUGMENTATIONS}")
    base_x = base_x.detach()
    augment_generator = None
    if augmentation != "none":
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        augment_generator = torch.Generator(device=base_x.device).manual_seed(seed)
    modes = [m.training for m in surrogates]
    for m in surrogates:
        m.eval()
    try:
        target_grads = [_adversarial_gradient(m, target_x, adversarial_y, numerics) for m in surrogates]

        def ensemble_loss(delta: torch.Tensor, augmented: bool = False) -> torch.Tensor:
            x = base_x + delta
            if augmented and augment_generator is not None:
                x = augment(x, augmentation, augment_generator)
            return torch.stack(
                [_matching_loss(m, x, base_y, g, numerics) for m, g in zip(surrogates, target_grads)]
            ).mean()

        def project(delta: torch.Tensor) -> torch.Tensor:
            return torch.maximum(torch.minimum(delta.clamp(-epsilon, epsilon), 1 - base_x), -base_x)

        milestones = [round(steps * f) for f in (3 / 8, 5 / 8, 7 / 8)]
        best: tuple[float, int, torch.Tensor, list[float]] | None = None
        restart_losses: list[float] = []
        for r in range(restarts):
            init = (torch.rand(base_x.shape, generator=generator) * 2 - 1) * epsilon  # CPU generator: portable draws
            delta = project(init.to(device=base_x.device, dtype=base_x.dtype)).requires_grad_(True)
            optimiser = torch.optim.Adam([delta], lr=lr * epsilon)
            scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones=milestones, gamma=0.1)
            losses: list[torch.Tensor] = []  # read once per restart: no host synchronisation per step on a GPU
            for _ in range(steps):
                loss = ensemble_loss(delta, augmented=True)
                losses.append(loss.detach())
                (grad,) = torch.autograd.grad(loss, delta)
                delta.grad = grad.sign()
                optimiser.step()
                scheduler.step()
                with torch.no_grad():
                    delta.copy_(project(delta))
            final = float(ensemble_loss(delta).detach())
            curve = [float(v) for v in torch.stack(losses).float().cpu().tolist()] + [final]
            restart_losses.append(final)
            if best is None or final < best[0]:
                best = (final, r, delta.detach().clone(), curve)
    finally:
        for m, mode in zip(surrogates, modes):
            m.train(mode)
    assert best is not None
    final, r, delta, curve = best
    info = {"restart_losses": restart_losses, "best_restart": r, "loss_curve": curve, "final_loss": final}
    return base_x + delta, info


@torch.no_grad()
def eval_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits in eval mode (batch norm on running statistics), on the model's device; its mode is restored."""
    was_training = model.training
    model.eval()
    try:
        return model(x.to(next(model.parameters()).device))
    finally:
        model.train(was_training)


def class_margin(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Logit of each row's `classes` entry minus the row's largest other logit (> 0 iff that class wins)."""
    index = classes.view(-1, 1).to(logits.device)
    return logits.gather(1, index).squeeze(1) - logits.scatter(1, index, float("-inf")).max(dim=1).values


@torch.no_grad()
def select_low_margin_targets(
    model: nn.Module | list[nn.Module], x: torch.Tensor, y: torch.Tensor, k: int
) -> torch.Tensor:
    """Indices of the `k` correctly classified points with the smallest logit margin, smallest first.

    Margin = logit of the true class minus the largest other logit (> 0 iff correct). On `tiny`
    random digits test points sit far from the decision boundary and no brew flipped them; the
    low-margin ones are flippable with a realistic budget (measured when the scenario was prototyped).
    Given several models (the
    attacker's surrogates), a point must be classified correctly by every one of them and is
    ranked by its mean margin: points that one clean model gets barely right are often wrong on
    another clean model, and such a target cannot show what the poison did. Models are evaluated
    in eval mode and their modes restored.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    models = model if isinstance(model, list) else [model]
    stacked = torch.stack([class_margin(eval_logits(m, x), y) for m in models])
    correct = torch.nonzero((stacked > 0).all(dim=0)).flatten()
    if k > len(correct):
        raise ValueError(f"only {len(correct)} points classified correctly by every model, asked for {k}")
    order = torch.argsort(stacked.mean(dim=0)[correct], stable=True)
    return correct[order[:k]]


def select_random_targets(
    y: torch.Tensor, k: int, num_classes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, intended classes) of `k` distinct random targets: the paper's threat model.

    As in Pawelczyk et al. (App. A.1.1) and Geiping et al.'s reference code (its "single-class"
    threat model): for each target a class drawn uniformly, a test point of that class drawn
    uniformly, and an intended (adversarial) class drawn uniformly among the other classes; the
    poisons are then drawn from the intended class (`brew_for_targets`). Nothing is conditioned on
    a model: a target the clean models get wrong fails validation like any target the brew did not
    flip. Draws come from `generator` (CPU), so they are the same on every device.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    labels = y.cpu()
    present = torch.unique(labels)
    if len(present) < 2 or num_classes < 2:
        raise ValueError("random targets need at least two classes")
    if k > len(labels):
        raise ValueError(f"asked for {k} targets among {len(labels)} test points")
    chosen: list[int] = []
    intended: list[int] = []
    while len(chosen) < k:
        cls = int(present[torch.randint(len(present), (1,), generator=generator)])
        members = torch.nonzero(labels == cls).flatten()
        index = int(members[torch.randint(len(members), (1,), generator=generator)])
        other = int(torch.randint(num_classes - 1, (1,), generator=generator))
        if index in chosen:
            continue
        chosen.append(index)
        intended.append(other + (other >= cls))
    return torch.tensor(chosen, dtype=torch.long), torch.tensor(intended, dtype=torch.long)


def make_witches_brew(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    surrogates: list[nn.Module],
    target_x: torch.Tensor,
    target_indices: torch.Tensor,
    adversarial_class: int,
    num_poisons: int,
    epsilon: float,
    steps: int,
    restarts: int,
    generator: torch.Generator,
    lr: float = 0.1,
) -> tuple[torch.Tensor, WitchesBrewPoison]:
    """Return (poisoned copy of `train_x`, secret). Labels are not changed.

    Poisons are drawn at random (from `generator`) among training images of the adversarial
    class, as in the paper: their correct label is the adversarial one, so the perturbation only
    has to push the gradient, not fight the label. Then `brew_poisons` brews them against all
    of `target_x` jointly (the prototype used one target per brew). Paper settings for CIFAR-10:
    1.5% budget, epsilon 16/255, 240 steps, 8 restarts; `tiny`: low-margin targets, about 5%,
    32/255, 2 surrogates.
    """
    _check_brew_args(epsilon, steps, restarts, surrogates)
    candidates = torch.nonzero(train_y == adversarial_class).flatten()
    if not 0 < num_poisons <= len(candidates):
        raise ValueError(f"num_poisons must be in [1, {len(candidates)}], got {num_poisons}")
    chosen = candidates[torch.randperm(len(candidates), generator=generator)[:num_poisons]].sort().values
    adversarial_y = torch.full((len(target_x),), int(adversarial_class), dtype=torch.long)
    brewed, info = brew_poisons(
        surrogates, train_x[chosen], train_y[chosen], target_x, adversarial_y, epsilon, steps, restarts, generator, lr
    )
    poisoned = train_x.clone()
    poisoned[chosen] = brewed
    secret = WitchesBrewPoison(
        chosen,
        brewed - train_x[chosen],
        torch.as_tensor(target_indices, dtype=torch.long).flatten(),
        int(adversarial_class),
        float(epsilon),
        float(info["final_loss"]),
    )
    return poisoned, secret


@torch.no_grad()
def adversarial_margins(model: nn.Module, x: torch.Tensor, adversarial_classes: torch.Tensor) -> torch.Tensor:
    """Logit of each input's adversarial class minus its largest other logit (> 0 iff the attack succeeds).

    A continuous measure of how far a model is pushed towards the attacker's goal: on `tiny` a
    handful of targets give a success *count* with almost no power, whereas the margin moves by
    several logits under the poison. Evaluated in eval mode, on the model's device; mode restored.
    """
    return class_margin(eval_logits(model, x).float().cpu(), adversarial_classes.to(torch.long).cpu())


@torch.no_grad()
def runner_up_classes(model: nn.Module | list[nn.Module], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """For each input, the class with the largest logit other than its label (logits averaged over
    several models): the cheapest flip, so the natural adversarial class for a target."""
    models = model if isinstance(model, list) else [model]
    total = cast(torch.Tensor, sum(eval_logits(m, x) for m in models))
    return total.scatter(1, y.view(-1, 1), float("-inf")).argmax(dim=1)


@dataclass(frozen=True)
class MultiTargetBrew:
    """Several independent brews in one training set: one poison set per target.

    `indices` lists every poisoned training index (sorted); `poison_target[i]` is the position
    (in `target_indices`) of the target that poison `indices[i]` was brewed for.
    """

    indices: torch.Tensor  # long (k_total,)
    poison_target: torch.Tensor  # long (k_total,)
    target_indices: torch.Tensor  # long (t,): positions of the targets in the test set
    adversarial_classes: torch.Tensor  # long (t,)
    epsilon: float
    final_losses: list[float]  # alignment loss of each target's brew


def brew_for_targets(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    surrogates: list[nn.Module],
    target_x: torch.Tensor,
    target_indices: torch.Tensor,
    adversarial_classes: torch.Tensor,
    poisons_per_target: int,
    epsilon: float,
    steps: int,
    restarts: int,
    generator: torch.Generator,
    lr: float = 0.1,
    on_target: Callable[[int, int], None] | None = None,
    augmentation: str = "none",
    numerics: LoopNumerics | None = None,
) -> tuple[torch.Tensor, MultiTargetBrew]:
    """Brew a separate, disjoint poison set for each target; return (poisoned copy of `train_x`, secret).

    One target per brew, as in the paper's main experiments: a joint brew against several
    targets needs a far larger budget per target. Each target's poisons are drawn at random from
    the training images of its adversarial class that no earlier target took, so the sets never
    overlap and the labels stay correct. `on_target(done, total)` reports progress; `augmentation`
    and `numerics` are `brew_poisons`'s.
    """
    _check_brew_args(epsilon, steps, restarts, surrogates)
    if poisons_per_target < 1:
        raise ValueError(f"poisons_per_target must be >= 1, got {poisons_per_target}")
    if not len(target_x) == len(target_indices) == len(adversarial_classes):
        raise ValueError("target_x, target_indices and adversarial_classes must have the same length")
    poisoned = train_x.clone()
    labels = train_y.cpu()  # index bookkeeping on the CPU (the generator is a CPU generator)
    taken = torch.zeros(len(labels), dtype=torch.bool)
    chosen_all, owner, losses = [], [], []
    for t in range(len(target_x)):
        cls = int(adversarial_classes[t])
        candidates = torch.nonzero((labels == cls) & ~taken).flatten()
        if len(candidates) < poisons_per_target:
            raise ValueError(
                f"target {t}: only {len(candidates)} unused training images of class {cls}, need {poisons_per_target}"
            )
        chosen = candidates[torch.randperm(len(candidates), generator=generator)[:poisons_per_target]].sort().values
        taken[chosen] = True
        on_device = chosen.to(train_x.device)
        brewed, info = brew_poisons(
            surrogates,
            train_x[on_device],
            train_y[on_device],
            target_x[t : t + 1],
            torch.tensor([cls], dtype=torch.long, device=train_x.device),
            epsilon,
            steps,
            restarts,
            generator,
            lr,
            augmentation,
            numerics,
        )
        poisoned[on_device] = brewed
        chosen_all.append(chosen)
        owner.append(torch.full((len(chosen),), t, dtype=torch.long))
        losses.append(float(info["final_loss"]))
        if on_target is not None:
            on_target(t + 1, len(target_x))
    indices = torch.cat(chosen_all)
    order = torch.argsort(indices)
    secret = MultiTargetBrew(
        indices[order],
        torch.cat(owner)[order],
        torch.as_tensor(target_indices, dtype=torch.long).flatten(),
        torch.as_tensor(adversarial_classes, dtype=torch.long).flatten(),
        float(epsilon),
        losses,
    )
    return poisoned, secret


# -- targets of a built fixture ------------------------------------------------------------------
# Clean-label targets of a Witches' Brew fixture: which inputs the attack aims at, and which it reached.
#
# The fixture stores, for every target, its position in the test set and its adversarial class.
# A target counts only if the attack demonstrably worked on it: the poisoned original assigns it
# to the adversarial class *and* the retrain reference classifies it correctly (Pawelczyk et al.
# evaluate removal on successfully poisoned targets; a target that the clean model already gets
# wrong, or that the poison never flipped, says nothing about unlearning). Build-time validation
# and the checks use this one definition.


def target_inputs(tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, true labels, adversarial classes) of every target of the fixture."""
    idx = tensors["secret.target_indices"]
    return tensors["test_x"][idx], tensors["test_y"][idx], tensors["secret.adversarial_classes"]


def target_margins(model: nn.Module, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Adversarial margin of `model` on every target (> 0: the attack succeeds on it)."""
    x, _, adv = target_inputs(tensors)
    return adversarial_margins(model, x, adv)


def validated_targets(original: nn.Module, retrain: nn.Module, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Boolean mask over the targets: the poisoned original is fooled and the retrain reference is right."""
    x, y, _ = target_inputs(tensors)
    fooled = target_margins(original, tensors) > 0
    return fooled & (predict(retrain, x) == y)


TARGET_SELECTIONS = ("low_margin", "random")


def per_fixture_minimum(recipe: ScenarioRecipe) -> tuple[int, int]:
    """(validated targets a fixture needs to be effective, validated targets one test needs).

    `[checks.targeted_removed] min_validated_targets` is what one test of `targeted_removed` needs, counted
    over every seed it pools (`checks.pooling`). A fixture with at least that many targets must validate
    that many on its own (tiny: 3 of its 10). A fixture with fewer (the paper's one target per poisoned
    model) is effective when all of its targets validate; the seeds of a pooled test then supply the rest.
    """
    needed = max(1, int(recipe.options("targeted_removed").get("min_validated_targets", 3)))
    return min(needed, int(recipe.attack["num_targets"])), needed


class WitchesBrewAttack(Attack):
    """`kind = "witches_brew"` (Geiping et al. 2021; Pawelczyk et al. Sec. 4.1): the attacker trains its own
    clean surrogates, picks its targets, and brews one poison set per target from training images of the
    target's adversarial class.

    `[attack] targets` says how targets are picked: "low_margin" (the default, `tiny`'s measured choice:
    the test points every surrogate classifies correctly with the smallest margin, adversarial class their
    runner-up) or "random" (the paper's threat model, `select_random_targets`). With `target_fallback =
    "low_margin"`, a fixture whose random targets fail validation is rebuilt with low-margin targets
    (`fallback`); the fixture's meta (`attack.target_selection`, `fallback`) and every
    `targeted_removed` result (`details.target_selection`) say which targets were used.
    `brew_augmentation` ("none" by default) brews through the victim's augmentation (`brew_poisons`), and
    `precision` ("fp32" by default, or "bf16") sets the brew's numerics on CUDA (`BuildContext.attack_numerics`).

    Poisoned images replace their clean versions in the training set (labels unchanged), so
    `clean_train_x` is the unpoisoned training set and the forget set is every poisoned index.
    After training, `reference_models` more clean models (trained like retrain, from other seeds; or, with
    `shared_references`, trained once on the whole clean set and shared by every seed: `after_training`) give
    the null distribution of the target margins; only their margins are kept. Poison metric: attack
    success on the validated targets (see "targets of a built fixture" above).
    """

    kind = "witches_brew"
    poison_name = "attack success on the validated targets"
    checks = ("targeted_removed", "not_mode_connected", "utility_preserved", "budget_respected")
    targeted_reference = "clean_models"

    def poison(self, ctx: BuildContext) -> PoisonedTrainingSet:
        recipe, split, device, progress = ctx.recipe, ctx.split, ctx.device, ctx.progress
        a = recipe.attack
        t0 = time.perf_counter()
        surrogates = [
            ctx.train(ExampleSet(split.train_x, split.train_y), f"surrogate-{i}", f"attacker's surrogate model {i + 1}")
            for i in range(int(a["surrogates"]))
        ]
        surrogate_seconds = time.perf_counter() - t0
        numerics = ctx.attack_numerics()
        surrogates = [numerics.prepare_model(m) for m in surrogates]
        test_x, test_y = split.test_x.to(device), split.test_y.to(device)
        selection = str(a.get("targets", "low_margin"))
        if selection == "low_margin":
            targets = select_low_margin_targets(surrogates, test_x, test_y, int(a["num_targets"])).cpu()
            adversarial = runner_up_classes(surrogates, test_x[targets], test_y[targets]).cpu()
        elif selection == "random":
            targets, adversarial = select_random_targets(
                split.test_y, int(a["num_targets"]), split.num_classes, ctx.generator
            )
        else:
            raise ValueError(f"[attack] targets must be one of {TARGET_SELECTIONS}, got {selection!r}")
        t0 = time.perf_counter()
        poisoned_x, brew = brew_for_targets(
            split.train_x.to(device),
            split.train_y.to(device),
            surrogates,
            test_x[targets],
            targets,
            adversarial,
            poisons_per_target=max(1, round(float(a["budget"]) * len(split.train_y))),
            epsilon=float(a["epsilon"]) / 255,
            steps=int(a["steps"]),
            restarts=int(a["restarts"]),
            generator=ctx.generator,
            lr=float(a.get("lr", 0.1)),
            on_target=(
                lambda done, total: progress("Witches' Brew poisons, targets", done, total, time.perf_counter() - t0)
            )
            if progress
            else None,
            augmentation=str(a.get("brew_augmentation", "none")),
            numerics=numerics,
        )
        poisoned_x = poisoned_x.cpu()
        meta = {
            "target_selection": selection,
            "target_classes": split.test_y[targets].tolist(),
            "adversarial_classes": brew.adversarial_classes.tolist(),
            "alignment_losses": brew.final_losses,
            "poisons": len(brew.indices),
            "max_perturbation": float((poisoned_x - split.train_x).abs().max()),
            "numerics": numerics.describe(),
            "seconds": {"surrogates": surrogate_seconds, "brewing": time.perf_counter() - t0},
        }
        return PoisonedTrainingSet(
            poisoned_x,
            split.train_y.clone(),
            brew.indices,
            split.train_x,
            secret={
                "target_indices": brew.target_indices,
                "adversarial_classes": brew.adversarial_classes,
                "poison_target": brew.poison_target,
            },
            meta=meta,
        )

    def after_training(self, ctx, poisoned, fit, tensors):  # type: ignore[no-untyped-def]
        """The null population: `reference_models` clean models' margins on this fixture's targets.

        By default each is trained like retrain, without this fixture's poisons, from its own seed. With
        `[attack] shared_references = true` they are shared models (`BuildContext.shared_model`): trained once on
        the whole clean training set and reused by every seed, which takes 8 of the 11 trainings of a
        `cifar10-resnet18` fixture out of every build but the first. Such a model has seen the clean originals
        of the poisons (1.5% of the training set, all of the intended class); the recipe's deviations table
        says what that changed where it was measured."""
        n = int(ctx.recipe.attack["reference_models"])
        shared = ctx.recipe.attack.get("shared_references", False)
        if not isinstance(shared, bool):
            raise ValueError(f"[attack] shared_references must be true or false, got {shared!r}")
        if shared:
            if ctx.shared_model is None:
                raise ValueError("[attack] shared_references needs a build that offers shared models")
            references = [
                ctx.shared_model(f"clean-reference-{j + 1}", f"shared clean model {j + 1} of {n}") for j in range(n)
            ]
        else:
            keep = torch.ones(len(poisoned.train_y), dtype=torch.bool)
            keep[poisoned.forget] = False
            data = ExampleSet(poisoned.train_x[keep], poisoned.train_y[keep])
            references = [fit(f"reference {j + 1}", data) for j in range(n)]
        target_x = tensors["test_x"][tensors["secret.target_indices"]]
        return {
            "reference_margins": torch.stack(
                [adversarial_margins(m, target_x, tensors["secret.adversarial_classes"]) for m in references]
            )
        }

    def validate(self, recipe, original, retrain, tensors):  # type: ignore[no-untyped-def]
        needed, pooled = per_fixture_minimum(recipe)
        kept = validated_targets(original, retrain, tensors)
        reference = tensors["secret.reference_margins"] > 0
        return {
            "targets": len(kept),
            "original_attack_success": float((target_margins(original, tensors) > 0).float().mean()),
            "retrain_attack_success": float((target_margins(retrain, tensors) > 0).float().mean()),
            "reference_attack_success": float(reference.float().mean()),
            "validated_targets": int(kept.sum()),
            "effective": bool(int(kept.sum()) >= needed),
            "rule": f"at least {needed} target{'s' if needed != 1 else ''} fooled on the poisoned original "
            "and classified "
            f"correctly by retrain"
            + (
                f" (targeted_removed pools the validated targets of its seeds and needs {pooled} in all)"
                if pooled > needed
                else ""
            ),
        }

    def fallback(self, recipe, validation):  # type: ignore[no-untyped-def]
        """Random targets that failed validation, with `target_fallback = "low_margin"`: rebuild with
        low-margin targets (the same seed, so the same surrogates), recorded in the fixture's meta."""
        a = recipe.attack
        choice = a.get("target_fallback")
        if choice is None or validation.get("effective", True) or a.get("targets", "low_margin") != "random":
            return None
        if choice != "low_margin":
            raise ValueError(f'[attack] target_fallback must be "low_margin", got {choice!r}')
        retry = dataclasses.replace(
            recipe, attack={**{k: v for k, v in a.items() if k != "target_fallback"}, "targets": "low_margin"}
        )
        reason = (
            f"random targets failed validation ({validation.get('validated_targets')} of {validation.get('targets')} "
            f"validated; {validation.get('rule')}): rebuilt with low-margin targets"
        )
        return retry, reason

    def target_notes(self, fixture: Fixture) -> dict[str, Any]:
        """How the fixture's targets were chosen (fixtures built before the choice existed: low margin)."""
        notes: dict[str, Any] = {
            "target_selection": fixture.meta.get("attack", {}).get("target_selection", "low_margin")
        }
        if "fallback" in fixture.meta:
            notes["target_fallback"] = fixture.meta["fallback"]["reason"]
        return notes

    def validated(self, fixture: Fixture, memo: Memo) -> torch.Tensor:
        f = fixture
        return memo(f.original, "validated-targets", lambda: validated_targets(f.original, f.retrain, f.tensors))

    def margins(self, fixture: Fixture, model: nn.Module, memo: Memo) -> torch.Tensor:
        """Adversarial margin of `model` on every target (> 0: fooled)."""
        return memo(model, "target-margins", lambda: target_margins(model, fixture.tensors))

    def measure_poison(self, fixture, model, held_out=None, memo=None):  # type: ignore[no-untyped-def]
        memo = memo or no_memo
        hits = target_margins(model, fixture.tensors)[self.validated(fixture, memo)] > 0
        p = Proportion(int(hits.sum()), len(hits))
        return PoisonMeasurement(p.value, p.stderr, p.trials, "proportion", p.successes)

    def target_scores(self, fixture, model, memo=None):  # type: ignore[no-untyped-def]
        """The adversarial margins on the validated targets (the rule applies its sigmoid)."""
        memo = memo or no_memo
        return self.margins(fixture, model, memo)[self.validated(fixture, memo)]

    def clean_model_target_scores(self, fixture, memo=None):  # type: ignore[no-untyped-def]
        return fixture.tensors["secret.reference_margins"][:, self.validated(fixture, memo or no_memo)]
