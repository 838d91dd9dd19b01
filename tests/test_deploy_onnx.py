"""ONNX export: FP32 parity, integer graphs of quantized models (integer kernels, exact decisions), ORT int8."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from conftest import randomize_bn

from fakelite.data.folders import labelled_images
from fakelite.data.io import load_rgb
from fakelite.data.transforms import eval_transform
from fakelite.deploy.onnx import export_onnx, op_counts, optimized_op_counts, parity, read_metadata
from fakelite.models import create_model
from fakelite.quant import QuantConfig, calibrate, quantize


def _images(root, n=16):
    items = labelled_images(root / "test" / "gen_a") + labelled_images(root / "test" / "gen_b")
    pre = create_model("npr_resnet23").preprocess
    return torch.stack([eval_transform(load_rgb(p), pre) for p, _ in items[:n]])


def _random_bn(m, seed=0):
    return randomize_bn(m, seed)


def test_fp32_parity_and_metadata(tiny_fp_model, tiny_data, tmp_path):
    from fakelite.artifact import load

    m = load(tiny_fp_model[1])
    out = tmp_path / "fp.onnx"
    rep = export_onnx(m, out, size=32)
    assert rep["kind"] == "fp32" and "Conv" in rep["ops"] and "BatchNormalization" not in rep["ops"]
    p = parity(m, out, _images(tiny_data))
    assert p["max_abs_logit_diff"] <= 1e-4
    assert p["same_decisions"] == p["n"]
    h = read_metadata(out)
    assert h["arch"]["name"] == "npr_resnet23" and h["threshold"] == pytest.approx(m.threshold)
    assert h["preprocess"]["npr"] is True and h["export"]["kind"] == "fp32"
    assert onnx.load(str(out)).opset_import[0].version >= 17


@pytest.mark.parametrize("quantizer,bits", [("minmax", 4), ("lsq", 4), ("minmax", 2)])
def test_integer_export_runs_integer_kernels_and_matches(tiny_data, tmp_path, quantizer, bits):
    torch.manual_seed(0)
    m = quantize(_random_bn(create_model("npr_resnet23")), QuantConfig(w_bits=bits, a_bits=bits, quantizer=quantizer,
                                                                          probe_size=32))
    x = _images(tiny_data, 10)
    calibrate(m, [x[:8]])
    m.eval()
    out = tmp_path / "q.onnx"
    rep = export_onnx(m, out, strict=True)
    ops = op_counts(out)
    n_quant_convs = sum(1 for n, v in rep["layers"].items())
    # every quantized conv is an integer kernel; no float Conv at all (the stem is 8-bit, the fc is a Gemm)
    assert ops.get("QLinearConv", 0) + ops.get("ConvInteger", 0) == n_quant_convs == 24
    assert "Conv" not in ops
    assert not [v for v in rep["layers"].values() if not v.startswith(("qlinear", "integer"))]
    assert ops.get("QLinearConv", 0) > 0  # uniform inputs: the bottleneck-internal convs fuse into QLinearConv
    # ORT keeps them integer after its own optimisations (no float Conv appears)
    opt = optimized_op_counts(out)
    assert "Conv" not in opt and "FusedConv" not in opt
    p = parity(m, out, x)
    assert p["same_decisions"] == p["n"], p
    assert p["max_abs_logit_diff"] < 1e-3, p  # strict: the same integer codes as the fake-quant model


def test_integer_export_cqb_and_slr(tiny_data, tmp_path):
    torch.manual_seed(1)
    m = quantize(_random_bn(create_model("npr_resnet23"), 1),
                 QuantConfig(w_bits=3, a_bits=3, quantizer="slr-n2uq", cqb=True, probe_size=32))
    x = _images(tiny_data, 10)
    calibrate(m, [x[:8]])
    m.eval()
    rep = export_onnx(m, tmp_path / "s.onnx")
    floats = [k for k, v in rep["layers"].items() if v.startswith("float")]
    # SLR's signed base grid has a non-integer zero point: padded 3×3 convs stay float (documented), the rest integer
    assert all(rep["layers"][k] == "float (non-integer zero point on a padded conv)" for k in floats)
    assert rep["ops"].get("Conv", 0) == len(floats) < len(rep["layers"])
    assert rep["ops"].get("ConvInteger", 0) + rep["ops"].get("QLinearConv", 0) == len(rep["layers"]) - len(floats)
    p = parity(m, tmp_path / "s.onnx", x)
    assert p["same_decisions"] == p["n"] and p["max_abs_logit_diff"] < 1e-3, p


def test_fp_static_int8_fuses_to_integer(tiny_fp_model, tiny_data, tmp_path):
    from fakelite.artifact import load

    m = load(tiny_fp_model[1])
    x = _images(tiny_data)
    out = tmp_path / "i8.onnx"
    rep = export_onnx(m, out, int8=True, calib=x.numpy()[:8], size=32)
    assert rep["kind"] == "int8-static" and rep["ops"].get("QuantizeLinear", 0) > 0
    assert optimized_op_counts(out).get("QLinearConv", 0) > 0
    p = parity(m, out, x)
    assert np.isfinite(p["max_abs_logit_diff"])
    assert read_metadata(out)["export"]["calib_images"] == 8


def test_export_refuses_int8_without_calibration(tmp_path):
    with pytest.raises(ValueError, match="calibration"):
        export_onnx(create_model("npr_resnet23"), tmp_path / "x.onnx", int8=True)
