"""The audit session: fixtures, one `unlearn()` per (unlearner, scenario, seed), checks.

Created lazily by the plugin on the first audit test (this is where torch is imported), and
kept in the pytest config's stash, so that every check of a case reuses the same unlearned
model and every measurement of the fixture's reference models is computed once.
"""

from __future__ import annotations

import dataclasses
import os
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from unlearn_audit.attacks.registry import get_attack
from unlearn_audit.checks import CHECK_NAMES, REMOVAL_CHECKS, CheckContext, CheckResult, check_info, get_check
from unlearn_audit.checks.family import family_size, has_exact_null
from unlearn_audit.checks.pooling import pool_check, pooled_meta
from unlearn_audit.checks.seed_parts import SeedParts
from unlearn_audit.engine.devices import resolve_device
from unlearn_audit.engine.options import AuditOptions, WorkerOptions
from unlearn_audit.engine.returned import identical_weights
from unlearn_audit.engine.runner import UnlearnOutcome, budget_for, run_unlearner
from unlearn_audit.engine.specs import names_reference_retrain, resolve_unlearner
from unlearn_audit.engine.usable_device import check_device_usable
from unlearn_audit.engine.worker import UnlearnerWorker, close_all
from unlearn_audit.errors import RecipeError
from unlearn_audit.scenarios.build import validate_attack
from unlearn_audit.scenarios.cache import FixtureCache
from unlearn_audit.scenarios.fixture import Fixture
from unlearn_audit.scenarios.measurements import MeasurementStore, numerics
from unlearn_audit.scenarios.prepared import mark_prepared, marker_path
from unlearn_audit.scenarios.provenance import built_with, fixture_id
from unlearn_audit.scenarios.recipes import ScenarioRecipe, load_profile_recipes
from unlearn_audit.scenarios.seeds import derived_seed


def derived_timeout(fixture: Fixture) -> float:
    """Ten times what training the original model took when the fixture was built, at least 60 s."""
    seconds = float(fixture.meta.get("train_seconds", {}).get("original", 30.0))
    return max(60.0, 10.0 * seconds)


@dataclass
class AuditSession:
    options: AuditOptions
    progress: Callable[[str, int, int, float], None] | None = None
    _fixtures: dict[tuple[str, int], Fixture] = field(default_factory=dict)
    _outcomes: dict[tuple[str, str, int, float], UnlearnOutcome] = field(default_factory=dict)
    _reported_in: dict[tuple[str, str, int, float | None], str] = field(
        default_factory=dict
    )  # the test that shows a case's unlearn() in full: its failure (in the message) or its captured output
    _measurements: weakref.WeakKeyDictionary[nn.Module, dict[str, Any]] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    workers: dict[str, UnlearnerWorker] = field(default_factory=dict)  # one per spec (process isolation)
    # The fixture models' measurements persist in their cache entries (see scenarios.measurements).
    _stores: weakref.WeakKeyDictionary[nn.Module, MeasurementStore] = field(default_factory=weakref.WeakKeyDictionary)
    # A returned model bit-identical to its fixture's original is measured as the original (see `measure`).
    _twins: weakref.WeakKeyDictionary[nn.Module, nn.Module] = field(default_factory=weakref.WeakKeyDictionary)

    def __post_init__(self) -> None:
        self.recipes: dict[str, ScenarioRecipe] = load_profile_recipes(self.options.profile)
        for recipe in self.recipes.values():
            check_recipe(recipe)
        self.family = family_size(self.recipes.values(), self.options.budgets_in_run)
        self.cache = FixtureCache(self.options.cache_dir, remote=self.options.remote_cache)
        # One GPU per xdist worker when several are visible (see unlearn_audit.engine.devices).
        self.device = torch.device(
            resolve_device(
                self.options.device,
                os.environ.get("PYTEST_XDIST_WORKER"),
                torch.cuda.device_count() if torch.cuda.is_available() else 0,
            )
        )
        check_device_usable(self.device)
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)
        self._files: dict[str, Any] = {}  # "requests": the RequestFiles of process isolation
        self._finalizer = weakref.finalize(self, _release, self.workers, self._files)

    def close(self) -> None:
        """Stop the worker processes and remove the request files (also done when the session is collected)."""
        self._finalizer()

    # -- fixtures ---------------------------------------------------------------------------
    def fixture(self, scenario: str, seed: int) -> Fixture:
        """The loaded fixture of (scenario, seed), built into the cache first if missing; once per session."""
        key = (scenario, seed)
        if key not in self._fixtures:
            recipe = self.recipes[scenario]
            # Fast-trainer (GPU profile) fixtures are built on the audit device; the CPU-sized plain-loop
            # fixtures (tiny) always on CPU, so that a GPU does not change them. They are still not the same
            # on every machine (another torch or CPU kernel trains other weights): each result names its
            # fixture's build (`scenarios.provenance`).
            build_device = self.device if recipe.training.trainer == "fast" else torch.device("cpu")
            path = self.cache.get_or_build(recipe, seed, self.progress_for(scenario, seed), device=build_device)
            fixture = Fixture.load(recipe, seed, path)
            fixture.original.to(self.device)  # the reference measurements run where the method's model is
            for model in fixture.reference_models().values():
                model.to(self.device)
            # Re-validate with the recipe's current thresholds (they are not part of the cache key).
            fixture.meta["validation"] = validate_attack(recipe, fixture.original, fixture.retrain, fixture.tensors)
            for role, model in {"original": fixture.original, **fixture.reference_models()}.items():
                self._stores[model] = MeasurementStore(path, role, recipe.check_options, self.device.type)
            self._fixtures[key] = fixture
        return self._fixtures[key]

    def prepare_references(self, scenario: str, seed: int) -> None:
        """Measure what every check measures on the fixture's own models, once, into the cache entry.

        Each check runs once with the retrain reference standing in for the method's model, so its
        measurements of the reference (and the original's, for the power) are computed and stored;
        the stand-in's own measurements are the reference's, so nothing else is computed. Called
        before the tests (by the xdist controller too), so workers and later runs only load them; the
        fixture is then marked prepared (`scenarios.prepared`), so that a later xdist controller can
        tell without torch that there is nothing left to do.
        """
        fixture = self.fixture(scenario, seed)
        if fixture.meta.get("validation", {}).get("effective", True):
            budget = budget_for(fixture, self.options.budget_fraction)
            stand_in = UnlearnOutcome(fixture.retrain, 0, 0.0, budget)
            for check in fixture.recipe.checks:
                if check != "budget_respected":
                    get_check(check)(CheckContext(fixture, stand_in, fixture.recipe.options(check), self.measure))
        mark_prepared(
            fixture.path,
            fixture.recipe.check_options,
            self.device.type,
            torch.get_num_threads(),
            numerics(self.device.type),
        )

    def references_stored(self, scenario: str, seed: int) -> bool:
        """Whether `prepare_references` would only load: the fixture is marked prepared for this environment."""
        fixture = self.fixture(scenario, seed)
        marker = marker_path(fixture.path, fixture.recipe.check_options, self.device.type, torch.get_num_threads())
        return marker is not None and marker.is_file()

    def progress_for(self, scenario: str, seed: int) -> Callable[[str, int, int, float], None] | None:
        """A progress callback whose labels name the scenario and seed, or None when the session shows no progress."""
        if self.progress is None:
            return None
        report = self.progress
        return lambda stage, done, total, secs, **kw: report(
            f"{scenario} seed {seed}: {stage}", done, total, secs, **kw
        )

    # -- the unlearner ----------------------------------------------------------------------
    def outcome(self, spec: str, scenario: str, seed: int, budget: float | None = None) -> UnlearnOutcome:
        """What the unlearner did on (scenario, seed) at `budget`: run once per session and shared by every check."""
        budget = self.options.budget_fraction if budget is None else budget
        key = (spec, scenario, seed, budget)
        if key not in self._outcomes:
            fixture = self.fixture(scenario, seed)
            run: dict[str, Any] = dict(
                budget_fraction=budget,
                # Independent of every seed used to build the fixture (and of the retrain reference's).
                seed=derived_seed(seed, f"unlearner:{scenario}") % (2**31),
                timeout=self.options.timeout or derived_timeout(fixture),
                device=self.device,
                exempt_from_budget=names_reference_retrain(spec),  # the reference itself, not a subclass
            )
            if self.options.isolation == "inline":
                from unlearn_audit.engine.counting import wrap_torch_transforms

                wrap_torch_transforms()  # before the method's module is imported, as a worker does
                self._outcomes[key] = run_unlearner(resolve_unlearner(spec), fixture, **run)
            else:
                from unlearn_audit.engine.isolated import RequestFiles, run_isolated

                if "requests" not in self._files:
                    self._files["requests"] = RequestFiles()
                files = self._files["requests"]
                self._outcomes[key] = run_isolated(self.worker(spec), fixture, files, **run)
            o = self._outcomes[key]
            if o.error and self.options.max_memory and _looks_like_memory(o.error):
                cap = f" (the worker's memory is capped by --audit-max-memory {_size(self.options.max_memory)})"
                o = dataclasses.replace(o, error=o.error + cap)
            if o.fixture_tampered:
                del self._fixtures[(scenario, seed)]  # reload a clean copy from disk for later cases
            problems = self.cache.verify_path(fixture.path)
            if problems:
                o = dataclasses.replace(
                    o,
                    model=None,
                    error="the cached fixture changed on disk while unlearn() ran: " + "; ".join(problems),
                )
            if o.model is not None and not o.fixture_tampered and identical_weights(o.model, fixture.original):
                self._twins[o.model] = fixture.original
            self._outcomes[key] = o
        return self._outcomes[key]

    def worker(self, spec: str) -> UnlearnerWorker:
        """The spec's worker process (started lazily by its first job); one per spec for the whole session."""
        if spec not in self.workers:
            self.workers[spec] = UnlearnerWorker(spec, self.worker_options())
        return self.workers[spec]

    def sandbox_of(self, spec: str) -> str | None:
        """What confined the method's process, as its worker said (`engine.sandbox`)."""
        if self.options.isolation == "inline":
            return "none: --audit-isolation inline (the method runs in the pytest process)"
        worker = self.workers.get(spec)
        return worker.sandbox if worker is not None else None

    def worker_options(self) -> WorkerOptions:
        """How this session's worker processes are started and confined (`engine.options`)."""
        return self.options.worker_options()

    # -- checks -----------------------------------------------------------------------------
    def measure(self, model: nn.Module, name: str, compute: Callable[[], Any]) -> Any:
        """Memoised per model object (weakly held, so a freed model's entry cannot be reused); for the
        fixture's own models also stored in the cache entry, for later runs and other workers. A
        returned model with the original's exact weights shares the original's measurements."""
        model = self._twins.get(model, model)
        cached = self._measurements.setdefault(model, {})
        if name not in cached:
            store = self._stores.get(model)
            cached[name] = store.get_or_compute(name, compute) if store is not None else compute()
        return cached[name]

    def check_options(self, recipe: ScenarioRecipe, check: str) -> dict[str, Any]:
        """The recipe's options for the check, at the suite's Bonferroni level for tests with exact nulls."""
        options = recipe.options(check)
        if self.family > 1 and has_exact_null(check, recipe):
            options["alpha"] = float(options.get("alpha", 0.01)) / self.family
        return options

    def family_rule(self, recipe: ScenarioRecipe, check: str) -> str:
        """The rule's note on the Bonferroni level, for checks whose null a retrained model meets exactly."""
        if self.family > 1 and has_exact_null(check, recipe):
            base = float(recipe.options(check).get("alpha", 0.01))
            return (
                f"; alpha = {base:g}/{self.family}: Bonferroni over this run's {self.family} tests whose null a "
                f"retrained model meets exactly, so Retrain fails any of them with probability <= {base:g}"
            )
        return ""

    def run_check(
        self,
        check: str,
        spec: str,
        scenario: str,
        seeds: int | tuple[int, ...],
        budget: float | None = None,
        nodeid: str | None = None,
    ) -> tuple[CheckResult, dict[str, Any]]:
        """The check's result over `seeds`, pooled (see `checks.pooling`), and run metadata.

        A failed unlearn() is shown in full (traceback, captured output) by the first test of its case,
        `nodeid`; the case's other checks point there in one line.
        """
        started = time.perf_counter()
        seeds = (seeds,) if isinstance(seeds, int) else tuple(seeds)
        raw, utility, metas = [], [], []
        for seed in seeds:
            r, u, m = self.run_check_on_seed(check, spec, scenario, seed, budget, nodeid)
            raw.append(r)
            utility.append(u)
            metas.append(m)
        recipe = self.recipes[scenario]
        alpha = float(self.check_options(recipe, check).get("alpha", 0.01))
        u_alpha = float(self.check_options(recipe, "utility_preserved").get("alpha", 0.01))
        family_rule = self.family_rule(recipe, check)
        result = pool_check(check, list(seeds), raw, utility, alpha, u_alpha, family_rule)
        meta = pooled_meta(metas)
        if self.options.keep_seed_parts:  # so that this run's one-seed results can be pooled with others later
            meta["seed_parts"] = SeedParts(
                alpha, u_alpha, family_rule, tuple(seeds), tuple(raw), tuple(utility)
            ).to_text()
        meta["check_seconds"] = time.perf_counter() - started
        return result, meta

    def run_check_on_seed(
        self, check: str, spec: str, scenario: str, seed: int, budget: float | None, nodeid: str | None
    ) -> tuple[CheckResult, CheckResult | None, dict[str, Any]]:
        """One seed: the check's own result, the utility result a removal check is conditioned on, metadata."""
        outcome = self.outcome(spec, scenario, seed, budget)
        fixture = self.fixture(scenario, seed)
        recipe = fixture.recipe
        builds = fixture.meta.get("build_attempts")  # every build, when the first failed validation
        meta = {
            "seed": seed,
            "recipe_hash": recipe.cache_key(seed),
            "fixture": str(fixture.path),
            "fixture_id": fixture_id(fixture.meta),
            "fixture_built_with": built_with(fixture.meta),
            "budget_fraction": outcome.budget.fraction,
            "budget_example_gradients": outcome.budget.example_gradients,
            "example_gradients": outcome.example_gradients,
            "unlearn_seconds": outcome.seconds,
            "device": str(self.device),
            "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
            "isolation": self.options.isolation,
            "sandbox": self.sandbox_of(spec),
            **outcome.details,
            # A fixture rebuilt after its attack failed validation says which build it is.
            **({"fixture_build_seed": fixture.meta.get("build_seed"), "fixture_builds": len(builds)} if builds else {}),
        }
        shown_in = self._reported_in.setdefault((spec, scenario, seed, budget), nodeid or "the first test of this case")
        captured = {k: v for k, v in outcome.output.items() if v}
        if captured:
            meta["unlearn_output"] = captured
            if outcome.ok:  # a failure's message carries it instead (`failure_message`)
                meta["unlearn_output_in"] = shown_in
        validation = fixture.meta.get("validation", {})
        utility = None
        declared = check_info(check)  # what the score would have measured, for the record of a check that did not run
        if not validation.get("effective", True) and check != "budget_respected":
            result = CheckResult(
                check=check,
                metric=declared.metric,
                unit=declared.unit,
                verdict="xfail",
                score=None,
                stderr=None,
                reference=None,
                reference_stderr=None,
                direction=declared.direction,
                reference_label=declared.reference,
                rule=f"fixture validation: {validation.get('rule')}",
                message=(
                    f"the attack did not work on the poisoned model of any of this fixture's {len(builds)} builds "
                    f"(build seeds {', '.join(str(b['build_seed']) for b in builds)}), so it cannot judge removal"
                    if builds
                    else "the attack did not work on this fixture's poisoned model, so it cannot judge removal"
                ),
                details={
                    "validation": validation,
                    **({"build_attempts": builds} if builds else {}),
                    **({"fallback": fixture.meta["fallback"]["reason"]} if "fallback" in fixture.meta else {}),
                },
            )
        elif not outcome.ok:
            result = CheckResult(
                check=check,
                metric=declared.metric,
                unit=declared.unit,
                verdict="fail",
                score=None,
                stderr=None,
                reference=None,
                reference_stderr=None,
                direction=declared.direction,
                reference_label=declared.reference,
                rule="the unlearner must return a finite model of the same architecture in time, "
                "leaving its inputs unmodified, and not the harness's own reference",
                message=failure_message(outcome, shown_in, nodeid),
            )
        else:
            ctx = CheckContext(fixture, outcome, self.check_options(recipe, check), self.measure)
            result = get_check(check)(ctx)
            if check in REMOVAL_CHECKS:
                u_ctx = CheckContext(fixture, outcome, self.check_options(recipe, "utility_preserved"), self.measure)
                utility = get_check("utility_preserved")(u_ctx)
        return result, utility, meta


def _looks_like_memory(error: str) -> bool:
    return any(sign in error for sign in ("can't allocate memory", "MemoryError", "SIGKILL", "out of memory"))


def _size(n: int) -> str:
    for unit, scale in (("G", 2**30), ("M", 2**20)):
        if n >= scale:
            return f"{n / scale:g}{unit}"
    return str(n)


def failure_message(outcome: UnlearnOutcome, reported_in: str, nodeid: str | None) -> str:
    """The full story (error, traceback, captured output) in the test that reports the case's failure
    first (`reported_in`), a pointer to it in the others."""
    error = outcome.error or ""
    if reported_in != (nodeid or "the first test of this case"):
        return f"unlearn() failed (see {reported_in}): {error.splitlines()[0] if error else ''}"
    parts = [error]
    if outcome.traceback:
        parts.append(outcome.traceback.rstrip())
    for name in ("stdout", "stderr"):
        if outcome.output.get(name):
            parts.append(f"--- captured {name} of unlearn() ---\n{outcome.output[name].rstrip()}")
    if outcome.output.get("warnings"):
        parts.append("--- warnings of unlearn() ---\n" + "\n".join(outcome.output["warnings"]))
    return "\n".join(parts)


def _release(workers: dict[str, UnlearnerWorker], files: dict[str, Any]) -> None:
    close_all(workers)
    workers.clear()
    for owned in files.values():
        owned.close()
    files.clear()


def check_recipe(recipe: ScenarioRecipe) -> None:
    """A RecipeError unless the recipe's attack is known and can be judged by every check the recipe lists."""
    where = f"recipe {recipe.profile}/{recipe.name}"
    try:
        attack = get_attack(str(recipe.attack.get("kind")))
    except ValueError as exc:
        raise RecipeError(f"{where}: {exc}") from None
    unknown = [c for c in recipe.checks if c not in CHECK_NAMES]
    if unknown:
        raise RecipeError(f"{where}: unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECK_NAMES)}")
    unjudgeable = [c for c in recipe.checks if c not in attack.checks]
    if unjudgeable:
        raise RecipeError(
            f"{where}: attack {attack.kind!r} cannot be judged by {', '.join(unjudgeable)} "
            f"(its checks: {', '.join(attack.checks)})"
        )


def configure_threads(requested: int | None) -> None:
    """Set torch's CPU threads: as requested, else 1.

    One thread is the default (serial and xdist alike, so that both give the same numbers) because the
    audit's models are small (little to gain from more) and torch's spinning worker threads slow down by
    an order of magnitude when the cores are oversubscribed, e.g. by a concurrent job (measured: 10 epochs
    of the tiny MLP took 2.4 s on one thread and 31 s on two while another process was busy).
    """
    torch.set_num_threads(requested if requested is not None else 1)
