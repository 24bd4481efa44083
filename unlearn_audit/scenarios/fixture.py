"""A cached scenario fixture loaded into memory: models, data, the poison's secret."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from unlearn_audit.profiles.models import model_factory
from unlearn_audit.protocol import ExampleSet
from unlearn_audit.scenarios.cache import DATA_FILE, META_FILE, WEIGHTS_FILE
from unlearn_audit.scenarios.recipes import ScenarioRecipe, clean_model_name


def tensor_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names and bytes: detects any in-place modification."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        # reshape(-1): 0-dim tensors (batch-norm's num_batches_tracked) cannot be viewed as bytes.
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class Fixture:
    recipe: ScenarioRecipe
    seed: int
    path: Path
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    original: nn.Module
    retrain: nn.Module
    factory: Callable[[], nn.Module] = field(repr=False)
    clean_models: list[nn.Module] = field(default_factory=list, repr=False)
    """`[references] clean_models`: models trained like retrain from other seeds (never given to a method)."""

    @classmethod
    def load(cls, recipe: ScenarioRecipe, seed: int, path: Path) -> Fixture:
        """Read a built cache entry: data, the poison's secret and every model, in eval mode."""
        meta = json.loads((path / META_FILE).read_text())
        tensors = load_file(str(path / DATA_FILE))
        weights = load_file(str(path / WEIGHTS_FILE))
        factory = model_factory(recipe.model, tuple(meta["input_shape"]), meta["num_classes"])
        names = ["original", "retrain", *(clean_model_name(j) for j in range(recipe.clean_models))]
        models = {}
        for name in names:
            model = factory()
            prefix = name + "."
            model.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)})
            models[name] = model.eval()
        return cls(
            recipe,
            seed,
            path,
            meta,
            tensors,
            models["original"],
            models["retrain"],
            factory,
            [models[name] for name in names[2:]],
        )

    def reference_models(self) -> dict[str, nn.Module]:
        """Every model the harness holds for this fixture besides the original: retrain and the clean models."""
        return {"retrain": self.retrain, **{clean_model_name(j): m for j, m in enumerate(self.clean_models)}}

    # -- the data, as the unlearner sees it -------------------------------------------------
    @property
    def forget_indices(self) -> torch.Tensor:
        """Positions in the training set of the examples to forget (the poison)."""
        return self.tensors["forget_indices"]

    @property
    def num_train(self) -> int:
        """Size of the (poisoned) training set."""
        return int(self.tensors["train_y"].shape[0])

    def forget_set(self) -> ExampleSet:
        """A private copy of the examples to forget, as the unlearner receives them."""
        idx = self.forget_indices
        return ExampleSet(self.tensors["train_x"][idx].clone(), self.tensors["train_y"][idx].clone())

    def retain_set(self) -> ExampleSet:
        """A private copy of the training examples to keep, as the unlearner receives them."""
        keep = torch.ones(self.num_train, dtype=torch.bool)
        keep[self.forget_indices] = False
        return ExampleSet(self.tensors["train_x"][keep].clone(), self.tensors["train_y"][keep].clone())

    def validation_set(self) -> ExampleSet:
        """Held-out clean data that no check evaluates on (empty when the recipe sets no `validation_fraction`)."""
        if "validation_x" in self.tensors:
            return ExampleSet(self.tensors["validation_x"].clone(), self.tensors["validation_y"].clone())
        x, y = self.tensors["test_x"], self.tensors["test_y"]
        return ExampleSet(x[:0].clone(), y[:0].clone())

    @property
    def num_classes(self) -> int:
        """Number of classes of the task."""
        return int(self.meta["num_classes"])

    def fingerprint(self) -> str:
        """Of everything the harness holds in memory for this fixture (data and every model)."""
        parts = dict(self.tensors)
        parts.update({f"original.{k}": v for k, v in self.original.state_dict().items()})
        for name, model in self.reference_models().items():
            parts.update({f"{name}.{k}": v for k, v in model.state_dict().items()})
        return tensor_fingerprint(parts)
