"""EU-k and CF-k: retrain or keep training only the last k layers on the retain set."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.methods._common import features, last_layers, sequential_split, spawn_seed, trainable_tail
from unlearn_audit.protocol import ExampleSet, TrainingRecipe, UnlearningRequest
from unlearn_audit.training.loops import train


@dataclass
class _LastLayers:
    k: int = 1
    lr_scale: float = 1.0
    budget_use: float = 1.0

    reinitialise: ClassVar[bool] = False

    def unlearn(self, model: nn.Module, request: UnlearningRequest) -> nn.Module:
        model.to(request.device)
        names = last_layers(model, self.k)
        if not names:
            return model.eval()
        if self.reinitialise:
            _reinitialise(model, names, request)
        retain = request.retain
        limit = int(self.budget_use * request.budget.example_gradients)
        if limit <= 0 or len(retain) == 0:
            return model.eval()
        recipe = dataclasses.replace(request.recipe, lr=request.recipe.lr * self.lr_scale)
        epochs = -(-limit // len(retain))
        split = sequential_split(model, names)
        if split is not None:
            # Precompute the frozen body's features once, without autograd (no budget spent), and
            # train the tail on them: the same updates as training the whole net with the body frozen.
            body, tail = cast(nn.Sequential, model)[:split], cast(nn.Sequential, model)[split:]
            feats = ExampleSet(features(body, retain, request.device), retain.labels)
            train(
                tail,
                feats,
                recipe,
                generator=request.generator,
                epochs=epochs,
                max_examples=limit,
                device=request.device,
            )
        else:
            _train_tail(model, trainable_tail(model, names), retain, recipe, request, epochs, limit)
        return model.eval()


def _reinitialise(model: nn.Module, names: list[str], request: UnlearningRequest) -> None:
    """Copy a fresh initialisation (from `request.model_factory`, seeded by the request's generator)
    into the named modules: their parameters and buffers (e.g. batch-norm running statistics)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spawn_seed(request))
        fresh = request.model_factory()
    fresh_modules, modules = dict(fresh.named_modules()), dict(model.named_modules())
    with torch.no_grad():
        for name in names:
            new = dict(fresh_modules[name].named_parameters(recurse=False))
            new.update(fresh_modules[name].named_buffers(recurse=False))
            for key, tensor in [
                *modules[name].named_parameters(recurse=False),
                *modules[name].named_buffers(recurse=False),
            ]:
                tensor.copy_(new[key])


def _train_tail(
    model: nn.Module,
    tail: list[nn.Module],
    data: ExampleSet,
    recipe: TrainingRecipe,
    request: UnlearningRequest,
    epochs: int,
    limit: int,
) -> None:
    """Any architecture: train the tail's own parameters through the whole (otherwise frozen) net.

    The frozen part runs in eval mode so that its batch-norm statistics stay as they were.
    """
    params = [p for m in tail for p in m.parameters(recurse=False)]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        model.eval()
        for m in tail:
            m.train()
        optimizer = recipe.make_optimizer(params)
        for x, y in data.batches(
            recipe.batch_size, generator=request.generator, device=request.device, epochs=epochs, max_examples=limit
        ):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@dataclass
class ExactUnlearningK(_LastLayers):
    """EU-k (Pawelczyk et al. 2024, App. A.2.4; Goel et al. 2022): retrain the last k layers from scratch.

    The paper: re-initialise the last K layers (those closest to the output) and retrain them on the
    retain set with the original training algorithm, all earlier layers frozen; they report learning
    rates 1e-3, 1e-4, 1e-5 for their ResNet-18 (relative to an original rate the text does not keep).

    Here: the layers are modules with parameters of their own, counted from the output; batch-norm
    (and other normalisation) layers ride along with the layer before them and are not counted in
    `k` (`k` = 1 is the classifier head; the `tiny` MLP 1024-256-10 has two layers, so `k` = 2 is a
    full retrain from a fresh init). The fresh values come from `request.model_factory()` under a
    seed drawn from `request.generator` (the fresh model is never forwarded, so it costs no budget).
    The tail is trained with the recipe's optimizer, batch size and rate (`lr_scale` = 1: "the
    training algorithm used to obtain the model", and a head trained from scratch needs the full rate;
    the paper's small rates are for a pretrained ResNet we do not have), for as many retain examples
    as `budget_use` of the budget allows (3 epochs at 10% of a 30-epoch training). For `nn.Sequential`
    models the frozen body's features are computed once under `torch.no_grad()` and the tail trained on
    them (the harness counts the examples at the tail); otherwise the whole net is forwarded with the
    body frozen and in eval mode. Either way frozen batch-norm statistics are untouched.
    """

    reinitialise: ClassVar[bool] = True


@dataclass
class CatastrophicForgettingK(_LastLayers):
    """CF-k (Pawelczyk et al. 2024, App. A.2.5; Goel et al. 2022): keep training the last k layers.

    The paper: like EU-k, but the last K layers continue training on the retain set from their
    current values instead of from scratch, earlier layers frozen, hoping that catastrophic forgetting
    erases the forget set.

    Here: exactly `ExactUnlearningK` without the re-initialisation (same layer definition, optimizer,
    rate, budget use and frozen-feature shortcut); `k` = 1 (the head) by default.
    """

    reinitialise: ClassVar[bool] = False
