"""Seeded runs that repeat bit for bit."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def deterministic_algorithms():
    """Seeded runs repeat exactly. Without torch's deterministic mode a W2A2 SLR-N2UQ + CQB QAT run at 2 threads
    diverged from an identical run within 6 steps: N2UQ's backward gathers per-interval parameters with an index as
    large as the activation (a[i], bounds[i]), and torch's default multithreaded index_put accumulates those
    gradients in a varying order. With it, runs repeat bit for bit — and 20 QAT steps took 43 s instead of 65 s. FP
    training was already deterministic and gives the same tensors either way. The previous mode is restored."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
