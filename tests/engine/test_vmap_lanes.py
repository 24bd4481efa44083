"""Examples inside `torch.vmap` count as examples: per-example gradients of a batch spend the batch."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from unlearn_audit.engine import vmap_lanes
from unlearn_audit.engine.counting import ExampleGradientCounter


@pytest.fixture(autouse=True)
def counted_vmap() -> None:
    vmap_lanes.install()


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def _per_example_gradients(net: nn.Module, x: torch.Tensor, y: torch.Tensor, **vmap_options) -> dict:
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss(p: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(functional_call(net, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

    return vmap(grad(loss), in_dims=(None, 0, 0), **vmap_options)(params, x, y)


@pytest.mark.parametrize("chunk_size", [None, 1, 5, 16, 100])
def test_per_example_gradients_count_the_batch_and_are_unchanged(chunk_size: int | None) -> None:
    net, x, y = _net(), torch.randn(16, 3, 8, 8), torch.randint(0, 2, (16,))
    with ExampleGradientCounter() as counter:
        grads = _per_example_gradients(net, x, y, chunk_size=chunk_size)
        assert counter.total == 16
        assert counter.verify() is None
    for i in (0, 7, 15):  # the wrapper changes the count, not the gradients
        net.zero_grad()
        nn.functional.cross_entropy(net(x[i : i + 1]), y[i : i + 1]).backward()
        for name, p in net.named_parameters():
            torch.testing.assert_close(grads[name][i], p.grad)


def test_a_lane_counts_one_example_whatever_its_tensor_looks_like() -> None:
    conv, linear = nn.Conv2d(3, 4, 3), nn.Linear(144, 2)
    with ExampleGradientCounter() as counter:
        torch.vmap(conv)(torch.randn(10, 3, 8, 8))  # unbatched (3, 8, 8) lanes: 10, not 3 per lane
        assert counter.total == 10
    with ExampleGradientCounter() as counter:
        torch.vmap(linear)(torch.randn(6, 144))  # 1-D lanes: 6, not 144 per lane
        assert counter.total == 6
    with ExampleGradientCounter() as counter, torch.no_grad():
        torch.vmap(linear)(torch.randn(6, 144))  # no autograd, no spend, as outside a map
        assert counter.total == 0


def test_nested_maps_and_structured_inputs_multiply_and_follow_in_dims() -> None:
    linear = nn.Linear(5, 2)
    with ExampleGradientCounter() as counter:
        torch.vmap(torch.vmap(linear))(torch.randn(3, 7, 5))
        assert counter.total == 21
    with ExampleGradientCounter() as counter:
        torch.func.vmap(lambda d, w: linear(d["a"]) * w, in_dims=({"a": 1}, None))({"a": torch.randn(5, 9)}, 2.0)
        assert counter.total == 9


@pytest.mark.parametrize(
    ("in_dims", "args", "expected"),
    [
        (0, (torch.zeros(4, 2),), 4),
        (1, (torch.zeros(4, 2),), 2),
        (-1, (torch.zeros(4, 3),), 3),
        ((None, 0), ({"w": torch.zeros(9)}, torch.zeros(5, 2)), 5),
        (({"w": None, "x": 0},), ({"w": torch.zeros(9), "x": torch.zeros(6)},), 6),
        (((None, 1),), ([torch.zeros(3), torch.zeros(2, 8)],), 8),
        ((None,), (torch.zeros(4),), None),  # nothing mapped: vmap itself refuses
        ((0, 0), (torch.zeros(4),), None),  # in_dims that do not match the arguments
    ],
)
def test_batch_size_reads_the_mapped_dimension(in_dims, args, expected) -> None:
    assert vmap_lanes.batch_size(in_dims, args) == expected


@given(st.integers(1, 500), st.one_of(st.none(), st.integers(1, 600)))
def test_chunk_sizes_split_the_batch_as_vmap_does(size: int, chunk_size: int | None) -> None:
    chunks = vmap_lanes.chunk_sizes(size, chunk_size)
    assert sum(chunks) == size
    assert all(0 < c <= (chunk_size or size) for c in chunks)
    assert len(chunks) == (-(-size // chunk_size) if chunk_size else 1)


def test_install_is_idempotent_and_outside_a_map_there_are_no_lanes() -> None:
    wrapped = torch.func.vmap
    vmap_lanes.install()
    assert torch.func.vmap is wrapped and torch.vmap is wrapped and vmap_lanes.installed()
    assert vmap_lanes.lanes() is None


def test_putting_the_uncounted_vmap_back_fails_the_verification(monkeypatch: pytest.MonkeyPatch) -> None:
    with ExampleGradientCounter() as counter:
        monkeypatch.setattr(torch.func, "vmap", torch.func.vmap.__wrapped__)  # as a hostile method would
        assert "torch.vmap was replaced" in (counter.verify() or "")
        monkeypatch.undo()
        assert counter.verify() is None


@pytest.mark.parametrize("per_example", [True, False])
def test_compiled_functorch_transforms_are_counted_and_run(per_example: bool) -> None:
    """Inside a transform a compiled graph may not mutate the count's tensor (Inductor failed on a compiled
    `vmap(grad(loss))`, and `grad` alone): there the count is kept outside the graph."""
    from torch.func import functional_call, grad, vmap

    net, x, y = nn.Linear(8, 3), torch.randn(5, 8), torch.randint(0, 3, (5,))
    params = {k: v.detach() for k, v in net.named_parameters()}

    def loss(p: dict, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(functional_call(net, p, (xs,)), ys)

    if per_example:
        step = torch.compile(
            lambda xs, ys: vmap(grad(loss), in_dims=(None, 0, 0))(params, xs[:, None], ys[:, None]), backend="aot_eager"
        )
    else:
        step = torch.compile(lambda xs, ys: grad(loss)(params, xs, ys), backend="aot_eager")
    expected = step.__wrapped__(x, y) if hasattr(step, "__wrapped__") else None
    with ExampleGradientCounter() as counter:
        got = step(x, y)
        assert counter.total == 5
        assert counter.verify() is None
    if expected is not None:
        for name in got:
            torch.testing.assert_close(got[name], expected[name])
