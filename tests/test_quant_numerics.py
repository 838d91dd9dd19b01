"""Quantizer maths: LSQ against PyTorch's oracle, N2UQ by hand, SLR threshold folding, binary gradients, MinMax."""

from __future__ import annotations

import math

import pytest
import torch

from fakelite.quant import numerics as nx
from fakelite.quant.quantizers import (
    BinaryAct,
    BinaryWeight,
    LSQAct,
    LSQWeight,
    MinMaxAct,
    MinMaxWeight,
    N2UQAct,
    N2UQWeight,
    SLRAct,
    make_act_quantizer,
)

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- LSQ


@pytest.mark.parametrize("bits,signed", [(2, True), (3, False), (4, True), (8, False)])
def test_lsq_matches_torch_oracle_per_tensor(bits, signed):
    g = torch.Generator().manual_seed(bits)
    x = (torch.randn(4, 8, 5, 5, generator=g) * 2).requires_grad_(True)
    qmin, qmax = nx.qrange(bits, signed)
    gf = nx.lsq_grad_factor(x[0].numel(), qmax)
    s = torch.tensor([0.37], requires_grad=True)
    y = nx.fake_quant_affine(x, s, 0.0, qmin, qmax, grad_factor=gf)
    x2 = x.detach().clone().requires_grad_(True)
    s2 = s.detach().clone().requires_grad_(True)
    y2 = torch._fake_quantize_learnable_per_tensor_affine(x2, s2, torch.zeros(1), qmin, qmax, gf)
    up = torch.randn(y.shape, generator=g)
    (y * up).sum().backward()
    (y2 * up).sum().backward()
    assert torch.equal(y, y2)
    assert torch.allclose(s.grad, s2.grad, rtol=1e-5, atol=1e-6)
    assert torch.allclose(x.grad, x2.grad, rtol=1e-6, atol=1e-7)


def test_lsq_weight_module_matches_per_channel_oracle():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 3, 3, 3, generator=g) * 0.1
    q = LSQWeight(3, w)
    expect = 2 * w.abs().reshape(6, -1).mean(1) / math.sqrt(3)  # s0 = 2·mean|W|/√Qp, Qp = 3
    assert torch.allclose(q.scale.detach(), expect)
    wp = w.clone().requires_grad_(True)
    y = q(wp)
    up = torch.randn(y.shape, generator=g)
    (y * up).sum().backward()
    s2 = q.scale.detach().clone().requires_grad_(True)
    w2 = w.clone().requires_grad_(True)
    y2 = torch._fake_quantize_learnable_per_channel_affine(w2, s2, torch.zeros(6), 0, -4, 3,
                                                            1.0 / math.sqrt(w.numel() * 3))
    (y2 * up).sum().backward()
    assert torch.equal(y, y2)
    assert torch.allclose(q.scale.grad, s2.grad, rtol=1e-5, atol=1e-7)
    assert torch.allclose(wp.grad, w2.grad, rtol=1e-6, atol=1e-7)


def test_lsq_act_signed_uses_integer_zero_point_and_init():
    x = torch.linspace(-0.375, 3.0, 1000).reshape(10, 100)  # h-swish-like range
    q = LSQAct(4, signed=True)
    q.calibrating = True
    q(x)
    q.calibrating = False
    assert q.initialized and q.zero_point is not None
    y = q(x)
    view = q.integer_view()
    assert isinstance(view["zero_point"], int) and view["zero_point"] > 0
    # every output is on the grid scale·(k − zp)
    k = y.detach() / view["scale"] + view["zero_point"]
    assert torch.allclose(k, k.round(), atol=1e-4)
    assert y.min() < 0


# ----------------------------------------------------------------------------- N2UQ


def test_n2uq_forward_levels_by_hand():
    start = torch.tensor(0.0)
    a = torch.tensor([0.5, 1.0, 2.0])  # bounds 0, .5, 1.5, 3.5 -> thresholds .25, 1.0, 2.5
    delta = torch.tensor(0.5)
    x = torch.tensor([-1.0, 0.1, 0.3, 0.6, 1.0, 1.2, 2.0, 3.0, 4.0])
    y = nx.n2uq_act(x, start, a, delta)
    assert torch.equal(y, 0.5 * torch.tensor([0.0, 0, 1, 1, 2, 2, 2, 3, 3]))
    assert torch.allclose(nx.n2uq_thresholds(start, a), torch.tensor([0.25, 1.0, 2.5]))


def test_n2uq_backward_slopes_by_hand():
    a = torch.tensor([0.5, 1.0, 2.0], requires_grad=True)
    start = torch.tensor(0.0, requires_grad=True)
    delta = torch.tensor(0.5, requires_grad=True)
    x = torch.tensor([-1.0, 0.1, 0.3, 0.6, 1.2, 2.0, 3.0, 4.0], requires_grad=True)
    y = nx.n2uq_act(x, start, a, delta)
    y.sum().backward()
    # slope Δ/a_i inside interval i, 0 outside [start, end]
    assert torch.allclose(x.grad, 0.5 * torch.tensor([0.0, 2, 2, 1, 1, 0.5, 0.5, 0]))
    # Δ gets the integer level (LSQ-style), summed over inputs
    assert torch.allclose(delta.grad, torch.tensor(0.0 + 0 + 1 + 1 + 2 + 2 + 3 + 3))

    # one input in interval 1 (x = 1.2): G = 1 + (x − start − a0)/a1
    a = torch.tensor([0.5, 1.0, 2.0], requires_grad=True)
    start = torch.tensor(0.0, requires_grad=True)
    y = nx.n2uq_act(torch.tensor([1.2]), start, a, torch.tensor(1.0))
    y.sum().backward()
    assert torch.allclose(a.grad, torch.tensor([-1.0, -0.7, 0.0]))
    assert torch.allclose(start.grad, torch.tensor(-1.0))

    # the interval floor (1e-3) applies in the forward
    a = torch.tensor([0.0, 1.0, 1.0])
    t = nx.n2uq_thresholds(torch.tensor(0.0), nx.n2uq_floor(a))
    assert t[0] == pytest.approx(5e-4)


def test_n2uq_module_defaults_and_calibration():
    q = N2UQAct(2, signed=False)
    assert torch.allclose(q.a.detach(), torch.full((3,), 2 / 3))
    q.calibrating = True
    q(torch.rand(1000) * 6)
    q.calibrating = False
    assert q.a.detach().mean() == pytest.approx(2.0, rel=0.05)  # P99.9 of U(0, 6) over 3 intervals
    assert torch.equal(q.codes(torch.tensor([0.0, 100.0])), torch.tensor([0, 3]))


def test_n2uq_weight_grid_and_clip_gradient():
    w = torch.tensor([[-3.0, -0.5, -0.1, 0.1, 0.5, 3.0]])
    q = N2UQWeight(2, w)
    gamma = 3 / 2
    assert torch.allclose(q.scale, gamma * w.abs().mean(1))
    wp = w.clone().requires_grad_(True)
    y = q(wp)
    S = q.scale.item()
    levels = S * torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0])  # c = 2: grid {−1, −⅓, ⅓, 1}·S
    assert all(bool(torch.isclose(v, levels).any()) for v in y.view(-1))
    y[0, -1].backward()  # 3.0 is clipped at +c/2: ∂Ŵ/∂c = S/2
    assert q.clip.grad is not None and float(q.clip.grad) == pytest.approx(S / 2)
    codes = q.codes(w)
    assert codes.tolist() == [[0, 1, 1, 2, 2, 3]]


# ----------------------------------------------------------------------------- SLR


def _slr(kind: str, bits: int) -> SLRAct:
    q = make_act_quantizer(f"slr-{kind}", bits, False, 8)
    assert isinstance(q, SLRAct)
    g = torch.Generator().manual_seed(1)
    x = torch.relu(torch.randn(64, 8, 4, 4, generator=g)) * 2
    q.calibrating = True
    q(x)
    q.calibrating = False
    with torch.no_grad():
        q.tau.fill_(0.3)
    return q


@pytest.mark.parametrize("kind,bits", [("lsq", 2), ("lsq", 3), ("n2uq", 2), ("n2uq", 3), ("minmax", 4)])
def test_slr_folded_thresholds_give_identical_outputs(kind, bits):
    q = _slr(kind, bits)
    g = torch.Generator().manual_seed(2)
    x = torch.cat([torch.relu(torch.randn(100_000, generator=g)) * 3, torch.rand(1000, generator=g) * 0.01])
    q.train()
    y_log = q(x.clone())  # ln(X + off) through the base quantizer (the training form)
    q.eval()
    y_fold = q(x.clone())  # X compared with t' = exp(t) − off (the inference form)
    t = q.thresholds()
    off = q.offset()
    assert torch.allclose(t, torch.exp(q.base.thresholds()) - off)
    # identical wherever x is not within float rounding of a threshold
    near = (x[:, None] - t[None, :]).abs().min(1).values < 1e-5 * (1 + x.abs())
    assert near.float().mean() < 1e-3
    assert torch.equal(y_log[~near], y_fold[~near])
    # and the training form is the log-domain base quantizer
    assert torch.equal(y_log, q.base.quantize(torch.log(x + off)).detach()) or kind == "minmax"


def test_slr_offset_reading_and_tau_gradient():
    q = SLRAct(LSQAct(2, True), eps=1.0, tau_init=0.0)
    q.train()
    x = torch.tensor([0.0, 0.2, 0.5, 4.0], requires_grad=True)
    q(x)  # first batch: max|X| = 4 -> off = min(4, 1) + 0 = 1
    assert float(q.offset().detach()) == pytest.approx(1.0)
    small = SLRAct(LSQAct(2, True), eps=2.0)
    small.train()
    small(torch.tensor([0.1, 0.5]))  # max|X| = 0.5 < eps -> off = 0.5 + tau
    assert float(small.offset().detach()) == pytest.approx(0.5)
    y = q(x)
    y.sum().backward()
    assert q.tau.grad is not None and torch.isfinite(q.tau.grad)
    with pytest.raises(ValueError):
        SLRAct(LSQAct(2, True), eps=0.5)


# ----------------------------------------------------------------------------- binary


def test_approx_sign_gradient():
    x = torch.tensor([-1.5, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 0.99, 1.5], requires_grad=True)
    y = nx.approx_sign(x)
    assert y.tolist() == [-1, -1, -1, -1, 1, 1, 1, 1, 1]
    y.sum().backward()
    assert torch.allclose(x.grad, torch.tensor([0.0, 0.0, 1.0, 1.5, 2.0, 1.5, 1.0, 0.02, 0.0]), atol=1e-6)


def test_rsign_learnable_threshold_and_binary_weight():
    q = BinaryAct(2)
    with torch.no_grad():
        q.alpha.copy_(torch.tensor([0.5, -0.5]))
    x = torch.tensor([[[[0.4]], [[-0.4]]]], requires_grad=True)  # (1, 2, 1, 1)
    y = q(x)
    assert y.view(-1).tolist() == [-1.0, 1.0]
    y.sum().backward()
    assert torch.allclose(q.alpha.grad, -torch.tensor([2 + 2 * -0.1, 2 - 2 * 0.1]))

    w = torch.tensor([[0.5, -1.5, 0.2, -0.2], [2.0, 0.0, -1.0, 1.0]])
    bq = BinaryWeight(w)
    wp = w.clone().requires_grad_(True)
    out = bq(wp)
    assert torch.allclose(out, torch.sign(w + 1e-12) * w.abs().mean(1, keepdim=True))
    out.sum().backward()
    assert wp.grad.tolist() == [[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 1.0]]


# ----------------------------------------------------------------------------- MinMax


def test_minmax_calibration_and_percentile():
    g = torch.Generator().manual_seed(3)
    batches = [torch.relu(torch.randn(16, 4, 8, 8, generator=g)) for _ in range(3)]
    q = MinMaxAct(8, signed=False)
    p = MinMaxAct(8, signed=False, percentile=99.0)
    for m in (q, p):
        m.calibrating = True
        for b in batches:
            m(b)
        m.calibrating = False
        m.eval()
    top = max(float(b.max()) for b in batches)
    assert float(q.lo) == 0.0 and float(q.hi) == pytest.approx(top)
    assert float(p.hi) < top
    x = batches[0]
    s = float(q.integer_view()["scale"])
    assert (q(x) - x).abs().max() <= s / 2 + 1e-6
    signed = MinMaxAct(4, signed=True)
    signed.calibrating = True
    signed(torch.linspace(-1, 3, 100))
    signed.calibrating = False
    assert signed.integer_view()["zero_point"] > 0
    assert signed(torch.tensor([-1.0])).item() < 0


def test_minmax_weight_symmetric_per_channel():
    w = torch.tensor([[1.0, -0.5, 0.2], [0.1, 0.05, -0.02]])
    q = MinMaxWeight(3, w)
    assert torch.allclose(q.scale, torch.tensor([1.0, 0.1]) / 3)
    y = q(w)
    assert torch.allclose(y[:, 0], w[:, 0])  # the channel maximum is representable


@pytest.mark.parametrize("make", [
    lambda w: MinMaxWeight(2, w), lambda w: MinMaxWeight(3, w, percentile=99.0), lambda w: LSQWeight(3, w),
    lambda w: LSQWeight(2, w), lambda w: N2UQWeight(2, w), lambda w: N2UQWeight(3, w), lambda w: BinaryWeight(w),
    lambda w: N2UQWeight(5, w), lambda w: LSQWeight(8, w),
])
def test_weight_codes_round_trip_through_decode(make):
    """Latent := decode(codes) re-quantizes to the same codes and the same fake-quant weight."""
    g = torch.Generator().manual_seed(4)
    w = torch.randn(8, 4, 3, 3, generator=g) * 0.2
    q = make(w)
    if isinstance(q, LSQWeight):
        with torch.no_grad():
            q.scale.mul_(torch.linspace(0.7, 1.3, 8))  # a "trained" step
    if isinstance(q, N2UQWeight):
        with torch.no_grad():
            q.clip.fill_(1.7)
    q.eval()
    codes = q.codes(w)
    state = {k: getattr(q, k).detach() for k in q.decode_state}
    latent = nx.decode_weight(q.code_kind, codes, q.bits, state, tuple(w.shape))
    assert torch.equal(q.codes(latent), codes)
    assert torch.equal(q(latent), q(w))
    c, s = q.signed_codes(w)
    assert torch.allclose(c.float() * s.reshape(-1, 1, 1, 1), q(w), atol=1e-6)


def test_lsq_act_integer_view_thresholds_match_codes():
    q = LSQAct(3, signed=False)
    q.calibrating = True
    q(torch.rand(1000) * 4)
    q.calibrating = False
    x = torch.rand(5000) * 5
    assert torch.equal(q.codes(x), torch.bucketize(x, q.thresholds(), right=True))
    assert torch.allclose(q.levels()[q.codes(x)], q(x).detach())
