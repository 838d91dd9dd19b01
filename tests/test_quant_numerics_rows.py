"""numerics' per-row symmetric grid (VEFT rows): codes, their inverse and the STE form agree."""

import torch

from fakelite.quant.numerics import dequantize_rows, fake_quant_rows, symmetric_row_codes


def test_row_codes_dequantize_and_ste_agree():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 3, 3, 3, generator=g)
    w[2] = 0.0  # an all-zero row: scale floors at 1e-12, codes 0
    for bits in (2, 4, 8):
        codes, scale = symmetric_row_codes(w, bits)
        qp = 2 ** (bits - 1) - 1
        assert codes.dtype == torch.int8 and codes.shape == w.shape and scale.shape == (6,)
        assert int(codes.max()) <= qp and int(codes.min()) >= -qp - 1
        assert torch.equal(codes.reshape(6, -1).abs().amax(1)[[0, 1, 3, 4, 5]], torch.full((5,), qp, dtype=torch.int8))
        assert not codes[2].any()
        deq = dequantize_rows(codes, scale)
        assert (deq - w).abs().reshape(6, -1).amax(1).le(scale / 2 + 1e-6).all()  # half a step at most
        x = w.clone().requires_grad_(True)
        y = fake_quant_rows(x, bits)
        assert torch.allclose(y, deq, atol=1e-6)
        y.sum().backward()
        assert torch.equal(x.grad, torch.ones_like(w))  # straight-through
        c2, s2 = symmetric_row_codes(deq, bits)  # the grid is a fixed point
        assert torch.equal(c2, codes) and torch.allclose(s2, scale)
