"""Activation checkpointing: the examples count once, not again when the backward pass recomputes them."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint_sequential

from unlearn_audit.engine import recompute
from unlearn_audit.engine.counting import ExampleGradientCounter, wrap_torch_transforms


@pytest.fixture(autouse=True)
def wrapped() -> None:
    wrap_torch_transforms()


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_a_checkpointed_model_counts_its_examples_once_with_the_same_gradients(use_reentrant: bool) -> None:
    net, x = _net(), torch.randn(6, 4, requires_grad=use_reentrant)  # reentrant needs an input with grad
    net(x).square().sum().backward()
    expected = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    with ExampleGradientCounter() as counter:
        torch.utils.checkpoint.checkpoint(net, x, use_reentrant=use_reentrant).square().sum().backward()
        assert counter.total == 6
        assert counter.verify() is None
    for p, g in zip(net.parameters(), expected):
        torch.testing.assert_close(p.grad, g)


def test_checkpoint_sequential_and_repeated_steps_count_each_step_once() -> None:
    net = _net()
    with ExampleGradientCounter() as counter:
        for n in (5, 7):
            checkpoint_sequential(net, 2, torch.randn(n, 4), use_reentrant=False).sum().backward()
        assert counter.total == 12
        assert not recompute.recomputing()


def test_without_a_backward_pass_nothing_is_recomputed_and_no_grad_spends_nothing() -> None:
    net = _net()
    with ExampleGradientCounter() as counter:
        torch.utils.checkpoint.checkpoint(net, torch.randn(3, 4), use_reentrant=False)
        assert counter.total == 3
        with torch.no_grad():
            torch.utils.checkpoint.checkpoint(net, torch.randn(9, 4), use_reentrant=False)
        assert counter.total == 3


def test_install_is_idempotent() -> None:
    wrapped = torch.utils.checkpoint.checkpoint
    wrap_torch_transforms()
    assert torch.utils.checkpoint.checkpoint is wrapped and recompute.installed()
