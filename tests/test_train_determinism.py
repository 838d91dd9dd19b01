"""Seeded training repeats exactly, with more than one thread, QAT of the low-bit quantizers included."""

from __future__ import annotations

import torch

from fakelite.quant import numerics as nx
from fakelite.utils.determinism import deterministic_algorithms


def _n2uq_grads(deterministic: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, 56, 56, generator=g).requires_grad_()
    a = torch.full((3,), 2 / 3, requires_grad=True)
    start, delta = torch.tensor(0.0, requires_grad=True), torch.tensor(2 / 3, requires_grad=True)
    loss = (nx.n2uq_act(x, start, a, delta) * torch.randn(x.shape, generator=g)).sum()
    if deterministic:
        with deterministic_algorithms():
            loss.backward()
    else:
        loss.backward()
    return torch.cat([a.grad, start.grad.reshape(1)])


def test_n2uq_interval_gradients_repeat_exactly_in_training_mode():
    """N2UQ's backward gathers per-interval parameters with a huge index tensor (a[i], bounds[i]); torch's default
    multithreaded index_put accumulation adds those in a varying order, so without deterministic mode the gradient
    of the intervals differed in the 6th digit from run to run (and a W2A2 QAT run diverged within 6 steps).
    fit() and the DeFakeQ calibration run under `deterministic_algorithms()`: identical every time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = [_n2uq_grads(True) for _ in range(4)]
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(runs[0], r) for r in runs[1:])


def test_deterministic_mode_is_restored():
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic_algorithms():
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before
