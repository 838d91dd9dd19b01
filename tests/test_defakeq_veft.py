"""DeFakeQ VEFT: chosen channels keep their precision, fine-tuning touches only them, bit-exact artifact round trip."""

from __future__ import annotations

import torch

from fakelite.quant import QuantConfig, calibrate, quantize
from fakelite.quant.veft import attach_veft_model, freeze, start_finetune, veft_summary


def _model():
    from fakelite.models import create_model

    torch.manual_seed(0)
    m = quantize(create_model("npr_resnet23").eval(), QuantConfig(w_bits=2, a_bits=2, quantizer="lsq"))
    calibrate(m, [torch.randn(8, 3, 32, 32)])
    return m


def test_veft_channels_keep_precision_and_round_trip(tmp_path):
    from fakelite import artifact
    from fakelite.quant.cost import model_cost

    m = _model()
    name, ch = "layer1.0.conv2", [3, 17, 40]
    size_before = model_cost(m, 32)["storage_bytes"]
    layer = m.get_submodule(name)
    w = layer.weight.detach().clone()
    plain = layer.weight_quantizer(w).detach().clone()
    attach_veft_model(m, {name: ch}, bits=8)
    qw = layer.quantized_weight().detach()
    others = [c for c in range(w.shape[0]) if c not in ch]
    assert torch.equal(qw[others], plain[others])  # other channels untouched (2-bit)
    for c in ch:  # kept channels at 8 bits: ≤ 255 levels, error ≤ half a step of max|row|/127
        assert len(torch.unique(qw[c])) <= 255
        step = w[c].abs().max() / 127
        assert (qw[c] - w[c]).abs().max() <= step / 2 + 1e-7
        assert (qw[c] - w[c]).abs().max() < (plain[c] - w[c]).abs().max()
    # fine-tune the rows, then freeze back to int8 codes
    params = start_finetune(m)
    assert [p.numel() for p in params] == [3 * w[0].numel()]
    with torch.no_grad():
        params[0].add_(0.01)
    freeze(m)
    vs = veft_summary(m)
    assert vs["channels"] == 3 and vs["storage_overhead_bytes"] == 3 * w[0].numel() + 3 * 4
    assert model_cost(m, 32)["storage_bytes"] == size_before + vs["storage_overhead_bytes"]
    path = tmp_path / "veft.fakelite"
    artifact.save(m, path)
    m2 = artifact.load(path)
    x = torch.randn(4, 3, 32, 32)
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))
        assert torch.equal(m2.get_submodule(name).quantized_weight(), layer.quantized_weight())
    assert m2.header["quant"]["plan"][name]["veft"] == {"channels": ch, "bits": 8}
