"""Profiles, data sources and architectures: built in, or registered by other packages (torch-free lookups).

A profile is a folder of scenario recipes (`<profile>/*.toml`). The built-in ones ship in
`unlearn_audit.fixtures`; a package adds its own without editing this one, by entry points in
its `pyproject.toml`:

    [project.entry-points."unlearn_audit.profiles"]
    tiny-blended = "mypkg.recipes"            # a package whose folder holds the profile's *.toml

    [project.entry-points."unlearn_audit.datasets"]
    my_data = "mypkg.data:load_split"          # (**recipe [data] options) -> unlearn_audit Split

    [project.entry-points."unlearn_audit.architectures"]
    my_net = "mypkg.models:build"              # (input_shape, num_classes, **[model] options) -> nn.Module

and by `unlearn_audit.attacks` for attacks (see `unlearn_audit.attacks.registry`). All three are the
suite's one `Registry` (`unlearn_audit.registry`); the built-in data sources and architectures are
named lazily, so that a profile's code (torchvision, transformers) is imported only when a recipe
uses it, and a registered name never replaces a built-in one.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from types import ModuleType
from typing import TYPE_CHECKING, Any

from unlearn_audit.registry import Registry

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

PROFILES_GROUP = "unlearn_audit.profiles"
DATASETS_GROUP = "unlearn_audit.datasets"
ARCHITECTURES_GROUP = "unlearn_audit.architectures"

BUILTIN_DATASETS = {
    "digits": "unlearn_audit.profiles.data:load_digits_split",  # `tiny` profile
    "cifar10": "unlearn_audit.profiles.cifar.data:load_cifar10_split",  # `cifar10-resnet18` profile
    "synthetic_cifar": "unlearn_audit.profiles.cifar.data:synthetic_cifar_split",  # its CPU stand-in
    # `text`: token ids N x L (long)
    "synthetic_sentiment": "unlearn_audit.profiles.text.data:load_synthetic_sentiment",
    "imdb": "unlearn_audit.profiles.text.data:load_imdb",  # `text-gpt2-imdb` profile
}
"""Data sources by name: `(**recipe [data] options) -> Split`."""

BUILTIN_ARCHITECTURES = {
    "mlp": "unlearn_audit.profiles.models:mlp",  # `tiny` profile
    "small_cnn": "unlearn_audit.profiles.models:small_cnn",
    "resnet18": "unlearn_audit.profiles.cifar.resnet:resnet18",  # `cifar10-resnet18` profile
    "gpt2_small": "unlearn_audit.profiles.text.models:gpt2_small",  # `text` profile (transformers when built)
    "gpt2_pretrained": "unlearn_audit.profiles.text.models:gpt2_pretrained",  # `text-gpt2-imdb` profile
}
"""Architectures by name: `(input_shape, num_classes, **[model] options) -> nn.Module`."""

DATASETS: Registry[Callable[..., Any]] = Registry(
    "data source",
    DATASETS_GROUP,
    BUILTIN_DATASETS,
    accepts=callable,
    expected="a callable (**options) -> Split",
)
ARCHITECTURES: Registry[Callable[..., Any]] = Registry(
    "architecture",
    ARCHITECTURES_GROUP,
    BUILTIN_ARCHITECTURES,
    accepts=callable,
    expected="a callable (input_shape, num_classes, **options) -> nn.Module",
)


def builtin_profiles_root() -> Traversable:
    return resources.files("unlearn_audit.fixtures")


def profiles() -> Registry[Traversable]:
    """The profiles' recipe folders: the built-in ones (the folders of `unlearn_audit.fixtures`, listed now),
    then every package registered in the group, whose value is the package holding the recipes."""
    root = builtin_profiles_root()
    builtins = {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    return Registry("profile", PROFILES_GROUP, builtins, convert=_recipe_folder)


def _recipe_folder(obj: Any) -> Traversable:
    """A registered package (the loaded module) as its folder; a built-in profile's folder as it is."""
    return resources.files(obj) if isinstance(obj, ModuleType) else obj


def profile_roots() -> dict[str, Traversable]:
    """Every profile's recipe folder, by name: built in first; a registered name cannot replace a built-in one."""
    registry = profiles()
    return {name: registry.get(name) for name in [*registry.builtins, *registry.registered()]}
