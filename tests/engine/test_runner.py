"""The defensive runner: budget counting, request plumbing, reference methods on edge cases."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from unlearn_audit.engine.counting import ExampleGradientCounter
from unlearn_audit.engine.runner import run_unlearner
from unlearn_audit.methods import GradientAscent, GradientDescent, NoOp, Retrain
from unlearn_audit.protocol import ExampleSet
from unlearn_audit.scenarios.cache import FixtureCache
from unlearn_audit.scenarios.fixture import Fixture
from unlearn_audit.scenarios.recipes import load_profile_recipes

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def gaussian_fixture(tiny_cache) -> Fixture:
    recipe = load_profile_recipes("tiny")["gaussian"]
    return Fixture.load(recipe, 0, FixtureCache(tiny_cache).get_or_build(recipe, 0))


def run(method, fixture, **kw):
    return run_unlearner(
        method,
        fixture,
        budget_fraction=kw.pop("budget", 0.1),
        seed=kw.pop("seed", 7),
        timeout=kw.pop("timeout", 60),
        device=CPU,
        **kw,
    )


def test_counter_counts_examples_with_autograd_only() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(5, 4)
    with ExampleGradientCounter() as counter:
        model(x)
        with torch.no_grad():
            model(torch.randn(100, 4))
        assert counter.total == 5
        # training only the head on precomputed features is counted too
        model[3](torch.randn(7, 3))
        assert counter.total == 12
        # so are deep copies (a teacher) and models the method builds itself
        copy.deepcopy(model)(torch.randn(2, 4))
        assert counter.total == 12
        nn.Linear(4, 2)(torch.randn(20, 4))
        assert counter.total == 20
        # clearing every module's own hooks does not stop the count
        for m in model.modules():
            m._forward_pre_hooks.clear()
        model(torch.randn(9, 4))
        assert counter.total == 21
        assert counter.verify() is None
    model(x)
    assert counter.total == 21, "only forward passes while it is installed count"


def test_a_module_called_with_its_input_as_a_keyword_is_counted() -> None:
    """`layer(input=x)` is `layer(x)`: a forward pre-hook sees no positional argument, the count still does."""
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with ExampleGradientCounter() as counter:
        x = torch.randn(6, 4)
        for layer in model:
            x = layer(input=x)
        assert counter.total == 6
        assert counter.verify() is None


@pytest.mark.parametrize("compile_with", ["trace", "script"])
def test_a_torchscript_model_counts_for_its_whole_tree(compile_with: str) -> None:
    """TorchScript runs the submodules without calling them from Python: its own call counts, once."""
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(6, 4)
    scripted = torch.jit.trace(model, x) if compile_with == "trace" else torch.jit.script(model)
    with ExampleGradientCounter() as counter:
        scripted(x).sum().backward()
        nn.Sequential(nn.ReLU(), scripted)(torch.randn(5, 4))  # inside a Python model: still counted
        assert counter.total == 11
        with torch.no_grad():
            scripted(x)
        assert counter.total == 11
        assert counter.verify() is None


@pytest.mark.parametrize("fullgraph", [False, True])
def test_a_compiled_model_is_counted_exactly_across_batch_sizes(fullgraph: bool) -> None:
    """`torch.compile` traces the hooks into its graph (Dynamo's eager backend here: no C++ compiler needed);
    `fullgraph=True` used to fail on the hook's clock."""
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    compiled = torch.compile(model, backend="eager", fullgraph=fullgraph)
    sizes = [8, 8, 3, 8, 5]
    with ExampleGradientCounter() as counter:
        for n in sizes:
            compiled(torch.randn(n, 4)).sum().backward()
        model(torch.randn(2, 4)).sum().backward()  # the same model, eagerly: one count per module
        with torch.no_grad():
            compiled(torch.randn(50, 4))
        assert counter.total == sum(sizes) + 2
        assert counter.verify() is None
    compiled(torch.randn(9, 4))
    assert counter.total == sum(sizes) + 2, "only forward passes while it is installed count"
    with ExampleGradientCounter() as counter:  # code compiled without the hooks (just now) is not reused
        compiled(torch.randn(6, 4)).sum().backward()
        assert counter.total == 6


def test_time_major_and_packed_sequences_count_their_batch() -> None:
    """Modules with `batch_first=False` take (length, batch, features); a packed sequence has no leading batch."""
    from torch.nn.utils.rnn import pack_padded_sequence

    time_major, batch_first = nn.LSTM(8, 4), nn.LSTM(8, 4, batch_first=True)
    attention = nn.MultiheadAttention(8, 2)
    x = torch.randn(5, 6, 8)  # 6 sequences of length 5
    with ExampleGradientCounter() as counter:
        time_major(x)[0].sum().backward()
        assert counter.total == 6
        time_major(torch.randn(5, 8))[0].sum().backward()  # one unbatched sequence
        assert counter.total == 7
        attention(x, x, x)[0].sum().backward()
        assert counter.total == 7  # 6 for the attention module itself
        packed = pack_padded_sequence(torch.randn(3, 5, 8), torch.tensor([5, 3, 2]), batch_first=True)
        batch_first(packed)[0].data.sum().backward()  # uncounted before: no tensor among its arguments
        assert counter.total == 7  # 3 for this LSTM
        batch_first(x.transpose(0, 1))[0].sum().backward()
        assert counter.total == 9
        assert counter.verify() is None


def test_counter_removal_is_detected() -> None:
    from torch.nn.modules import module as internals

    with ExampleGradientCounter() as counter:
        # A method would reach torch's hook tables as this test does; the counter checks what the hooks do.
        for hooks, lost in (
            (internals._global_forward_pre_hooks, "time limit no longer stops"),
            (internals._global_forward_hooks, "no longer counted"),
        ):
            saved = dict(hooks)
            hooks.clear()
            problem = counter.verify()
            assert problem is not None and "removed" in problem and lost in problem
            hooks.update(saved)
            assert counter.verify() is None
        assert counter.deadline == float("inf") and not counter.cancelled and counter.total == 0
        original_call = nn.Module.__call__
        nn.Module.__call__ = lambda self, *a, **k: self.forward(*a, **k)
        try:
            assert "no longer counted" in counter.verify()
        finally:
            nn.Module.__call__ = original_call


def test_gradient_descent_spends_exactly_its_budget(gaussian_fixture: Fixture) -> None:
    outcome = run(GradientDescent(), gaussian_fixture)
    assert outcome.ok
    assert outcome.example_gradients == outcome.budget.example_gradients == int(0.1 * 30 * gaussian_fixture.num_train)


def test_noop_spends_nothing_and_returns_an_equal_copy(gaussian_fixture: Fixture) -> None:
    outcome = run(NoOp(), gaussian_fixture)
    assert outcome.ok and outcome.example_gradients == 0
    assert outcome.model is not gaussian_fixture.original
    for a, b in zip(outcome.model.state_dict().values(), gaussian_fixture.original.state_dict().values()):
        assert torch.equal(a, b)
    assert not any(m._forward_pre_hooks for m in outcome.model.modules()), "the audited model carries no hooks"


def test_retrain_is_flagged_exempt_and_spends_a_full_training(gaussian_fixture: Fixture) -> None:
    outcome = run(Retrain(), gaussian_fixture, exempt_from_budget=True)
    assert outcome.ok and outcome.exempt_from_budget
    assert outcome.example_gradients == 30 * len(gaussian_fixture.retain_set())


def test_unlearner_seed_is_reproducible(gaussian_fixture: Fixture) -> None:
    a = run(GradientDescent(budget_use=0.2), gaussian_fixture, seed=3).model
    b = run(GradientDescent(budget_use=0.2), gaussian_fixture, seed=3).model
    c = run(GradientDescent(budget_use=0.2), gaussian_fixture, seed=4).model
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


class Recorder:
    """Checks what the request promises, and records it."""

    def unlearn(self, model, request):
        self.seen = (len(request.forget), len(request.retain), request.budget, request.num_classes, request.seed)
        fresh = request.model_factory()
        assert type(fresh) is type(model) and fresh is not model
        assert next(model.parameters()).device == request.device
        return model


def test_request_carries_protocol_fields(gaussian_fixture: Fixture) -> None:
    rec = Recorder()
    outcome = run(rec, gaussian_fixture, budget=0.05)
    assert outcome.ok, outcome.error
    n_forget, n_retain, budget, classes, seed = rec.seen
    assert n_forget == 150 and n_forget + n_retain == gaussian_fixture.num_train
    assert budget.fraction == 0.05 and budget.example_gradients == int(0.05 * 30 * gaussian_fixture.num_train)
    assert classes == 10 and seed == 7


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(0, 40), batch=st.integers(1, 16), shuffle=st.booleans(), seed=st.integers(0, 2**16))
def test_batches_cover_every_example_once_and_leave_data_unmodified(
    n: int, batch: int, shuffle: bool, seed: int
) -> None:
    x = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3)
    y = torch.arange(n)
    data = ExampleSet(x.clone(), y.clone())
    seen = []
    for bx, by in data.batches(batch, shuffle=shuffle, generator=torch.Generator().manual_seed(seed)):
        assert len(bx) == len(by) <= batch
        assert torch.equal(bx[:, 0], by.float() * 3)
        seen.extend(by.tolist())
    assert sorted(seen) == list(range(n))
    assert torch.equal(data.inputs, x) and torch.equal(data.labels, y) and len(data) == n


@pytest.mark.parametrize("size", [0, 1])
@pytest.mark.parametrize("method", [GradientDescent(), GradientAscent(), NoOp()], ids=lambda m: type(m).__name__)
def test_reference_methods_handle_tiny_forget_sets(method, size: int) -> None:
    """Empty and one-sample forget sets: no crash, finite weights, same architecture."""
    from unlearn_audit.profiles.models import nonfinite_tensors
    from unlearn_audit.protocol import Budget, TrainingRecipe, UnlearningRequest

    gen = torch.Generator().manual_seed(0)
    factory = lambda: nn.Sequential(nn.Flatten(), nn.Linear(6, 3))  # noqa: E731
    retain = ExampleSet(torch.randn(30, 6, generator=gen), torch.randint(0, 3, (30,), generator=gen))
    forget = ExampleSet(torch.randn(size, 6, generator=gen), torch.randint(0, 3, (size,), generator=gen))
    request = UnlearningRequest(
        forget, retain, Budget(0.1, 20), TrainingRecipe(batch_size=8, epochs=5), factory, 3, CPU, 0, gen
    )
    before = (forget.inputs.clone(), retain.inputs.clone())
    out = method.unlearn(factory(), request)
    assert isinstance(out, nn.Module) and not nonfinite_tensors(out)
    assert torch.equal(before[0], forget.inputs) and torch.equal(before[1], retain.inputs)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 30), batch=st.integers(1, 8), limit=st.integers(0, 100), epochs=st.sampled_from([None, 1, 3]))
def test_batches_respect_max_examples_across_epochs(n: int, batch: int, limit: int, epochs) -> None:
    data = ExampleSet(torch.zeros(n, 2), torch.arange(n))
    sizes = [
        len(y)
        for _, y in data.batches(batch, generator=torch.Generator().manual_seed(0), epochs=epochs, max_examples=limit)
    ]
    expected = min(limit, n * epochs) if epochs is not None else (limit if n else 0)
    assert sum(sizes) == expected and all(0 < s <= batch for s in sizes)


class TouchesFixtureThroughFactory:
    """Tries to reach the harness's fixture through the model factory's closure."""

    def unlearn(self, model, request):
        cells = [c.cell_contents for c in (request.model_factory.__closure__ or ())]
        for cell in cells:
            for value in (cell, *[getattr(cell, "__closure__", None) or ()]):
                if hasattr(value, "retrain"):
                    with torch.no_grad():
                        for p in value.retrain.parameters():
                            p.zero_()
        raise RuntimeError("raised after tampering")


def test_fixture_is_not_reachable_from_the_request(gaussian_fixture: Fixture) -> None:
    before = gaussian_fixture.fingerprint()
    outcome = run(TouchesFixtureThroughFactory(), gaussian_fixture)
    assert not outcome.ok and "raised RuntimeError" in (outcome.error or "")
    assert gaussian_fixture.fingerprint() == before


class SharedModel:
    """Returns one module object for every request (e.g. a cached model): the audit must copy it."""

    def __init__(self) -> None:
        self.model = None

    def unlearn(self, model, request):
        if self.model is None:
            self.model = model
        return self.model


def test_returned_model_is_copied_and_unfrozen(gaussian_fixture: Fixture) -> None:
    method = SharedModel()
    first = run(method, gaussian_fixture).model
    with torch.no_grad():
        for p in method.model.parameters():
            p.zero_()
            p.requires_grad_(False)
    assert first is not method.model and any(float(p.detach().abs().sum()) > 0 for p in first.parameters())
    assert all(p.requires_grad for p in first.parameters())


def test_only_the_reference_retrain_is_exempt() -> None:
    from unlearn_audit.engine.specs import names_reference_retrain

    assert names_reference_retrain("unlearn_audit.methods:Retrain")
    assert names_reference_retrain("unlearn_audit.methods.basic:Retrain")
    assert not names_reference_retrain("mypkg.methods:Retrain")  # a look-alike or subclass elsewhere
    assert not names_reference_retrain("unlearn_audit.methods:NoOp")


def test_budget_is_not_lost_to_float_rounding() -> None:
    import math

    assert int(0.7 * 43110) == 30176 and math.floor(0.7 * 43110 + 1e-9) == 30177
