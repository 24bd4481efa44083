"""Scenario recipes: the declarative TOML files of a profile, `fixtures/<profile>/*.toml`
(or a registered profile's folder).

A recipe says how to build one poisoned fixture (data, model, training, attack) and how to
judge methods against it (the `[checks.*]` tables). Only the build part enters the cache key,
so that re-calibrating a threshold does not rebuild models.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from unlearn_audit.profiles.registry import profile_roots
from unlearn_audit.protocol import PRECISIONS, TrainingRecipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FIXTURE_FORMAT_VERSION = 1

BUILD_ATTEMPTS = 4
"""How many builds a fixture gets by default before it is stored as not validated (its tests then xfail).

An attack does not work on every seed (Gradient Canceling on `tiny` failed validation at 2 seeds of 10):
a fixture whose attack failed is built again from the next build seed (`scenarios.build.build_seed`), so
that a default run judges every scenario. A recipe may set its own (`[scenario] build_attempts`, e.g. 1 for a
stand-in whose attack is too small to work). Part of the cache key, so a change rebuilds."""


@dataclass(frozen=True)
class ScenarioRecipe:
    """One poisoned training run and the rules its checks apply."""

    profile: str
    name: str
    description: str
    checks: tuple[str, ...]
    data: dict[str, Any]
    model: dict[str, Any]
    training: TrainingRecipe
    attack: dict[str, Any]
    check_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    deviations: tuple[
        dict[str, str], ...
    ] = ()  # where it differs from the papers (`[[deviations]]`; not in the cache key)
    build_attempts: int = BUILD_ATTEMPTS
    """`[scenario] build_attempts`: builds from successive build seeds until the attack validates."""
    references: dict[str, Any] = field(default_factory=dict)
    """`[references]`: extra reference models the build trains, e.g. `clean_models = 8`: models trained like retrain
    (without the poisons) from other seeds, a population that shows how much clean models differ from each other."""

    @property
    def clean_models(self) -> int:
        return int(self.references.get("clean_models", 0))

    def build_spec(self, seed: int) -> dict[str, Any]:
        """Everything that determines the built fixture (and nothing else)."""
        return {
            "format": FIXTURE_FORMAT_VERSION,
            "profile": self.profile,
            "scenario": self.name,
            "seed": seed,
            "build_attempts": self.build_attempts,
            "data": self.data,
            "model": self.model,
            "training": self.training.cache_spec(),
            "attack": self.attack,
            # Only when set, so that the keys of recipes without extra references are unchanged.
            **({"references": self.references} if self.references else {}),
        }

    def cache_key(self, seed: int) -> str:
        return spec_key(self.build_spec(seed))

    def options(self, check: str) -> dict[str, Any]:
        return dict(self.check_options.get(check, {}))


def spec_key(spec: dict[str, Any]) -> str:
    """Hex SHA-256 of a JSON-able build spec, independent of key order: what a cache entry is keyed by."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def clean_model_name(j: int) -> str:
    """The weights prefix of a fixture's j-th (0-based) `[references] clean_models` model."""
    return f"clean{j + 1}"


STANDIN_SUFFIX = "-standin"
"""`<profile>-standin` is `<profile>` with each recipe's `[standin]` table merged over it (see `parse_recipe`)."""


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


DEVIATION_FIELDS = ("topic", "paper", "here", "why", "effect")


def _deviation(entry: Any, source: str) -> dict[str, str]:
    if (
        not isinstance(entry, dict)
        or set(entry) != set(DEVIATION_FIELDS)
        or not all(isinstance(v, str) for v in entry.values())
    ):
        raise ValueError(
            f"invalid recipe {source}: a [[deviations]] entry needs exactly the text fields "
            f"{', '.join(DEVIATION_FIELDS)}, got {entry!r}"
        )
    return {k: entry[k] for k in DEVIATION_FIELDS}


def _references(table: Any, source: str) -> dict[str, Any]:
    if not isinstance(table, dict) or set(table) - {"clean_models"}:
        raise ValueError(f"invalid recipe {source}: [references] takes only clean_models, got {table!r}")
    count = table.get("clean_models", 0)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0 or count == 1:
        raise ValueError(
            f"invalid recipe {source}: [references] clean_models must be 0 or an integer >= 2 "
            f"(a population needs a spread), got {count!r}"
        )
    return dict(table)


def _build_attempts(value: Any, source: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"invalid recipe {source}: [scenario] build_attempts must be an integer >= 1, got {value!r}")
    return value


def _attack(table: dict[str, Any], source: str) -> dict[str, Any]:
    """The `[attack]` table; its `precision` (the numerics of the attack's own loops) checked here, when the recipe
    loads, rather than minutes into a build."""
    precision = table.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise ValueError(f"invalid recipe {source}: [attack] precision must be one of {PRECISIONS}, got {precision!r}")
    return dict(table)


def parse_recipe(profile: str, text: str, source: str = "<recipe>", standin: bool = False) -> ScenarioRecipe:
    """Parse one recipe. With `standin`, its `[standin]` table is merged over it first.

    A stand-in is the same scenario made small enough for a CPU (synthetic data of the same shape,
    a narrower model, fewer epochs): every other key -- trainer, augmentation, attack kind, checks --
    is the real recipe's, so CI on a CPU runs the real profile's code path.
    """
    raw = tomllib.loads(text)
    if standin:
        if "standin" not in raw:
            raise ValueError(f"recipe {source} has no [standin] table")
        raw = _merged({k: v for k, v in raw.items() if k != "standin"}, raw["standin"])
    try:
        scenario = raw["scenario"]
        training = TrainingRecipe(**raw["training"])
        training.check_values(source)
        return ScenarioRecipe(
            profile=profile,
            name=scenario["name"],
            description=scenario.get("description", ""),
            checks=tuple(scenario["checks"]),
            data=dict(raw["data"]),
            model=dict(raw["model"]),
            training=training,
            attack=_attack(raw["attack"], source),
            check_options={k: dict(v) for k, v in raw.get("checks", {}).items()},
            deviations=tuple(_deviation(d, source) for d in raw.get("deviations", [])),
            references=_references(raw.get("references", {}), source),
            build_attempts=_build_attempts(scenario.get("build_attempts", BUILD_ATTEMPTS), source),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"invalid recipe {source}: {exc!r}") from exc


def profile_names() -> list[str]:
    """The profiles (built in and registered), and `<profile>-standin` for each whose recipes all have a stand-in."""
    roots = profile_roots()
    standins = [name + STANDIN_SUFFIX for name, root in roots.items() if _has_standin(root)]
    return sorted([*roots, *standins])


def _has_standin(root: Any) -> bool:
    tomls = [e for e in root.iterdir() if e.name.endswith(".toml")]
    return bool(tomls) and all("standin" in tomllib.loads(e.read_text()) for e in tomls)


def load_profile_recipes(profile: str) -> dict[str, ScenarioRecipe]:
    """All scenario recipes of a profile, by scenario name (`<profile>-standin`: its CPU stand-in)."""
    roots = profile_roots()
    standin = False
    if profile in roots:
        root = roots[profile]
    elif profile.endswith(STANDIN_SUFFIX) and profile[: -len(STANDIN_SUFFIX)] in roots:
        root, standin = roots[profile[: -len(STANDIN_SUFFIX)]], True
        if not _has_standin(root):
            raise KeyError(profile)
    else:
        raise KeyError(profile)
    recipes = {}
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            recipe = parse_recipe(profile, entry.read_text(), source=str(entry), standin=standin)
            recipes[recipe.name] = recipe
    if not recipes:
        raise KeyError(profile)
    return recipes
