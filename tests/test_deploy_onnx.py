"""ONNX export: FP32 parity, integer graphs of quantized models (integer kernels, exact decisions), ORT int8."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_bn

from fakelite.data.folders import labelled_images
from fakelite.data.io import load_rgb
from fakelite.data.transforms import eval_transform
from fakelite.deploy.lowering import ExportConv
from fakelite.deploy.onnx import INTEGER_KERNELS, export_onnx
from fakelite.deploy.onnx_graph import op_counts, optimized_op_counts, read_metadata
from fakelite.deploy.parity import parity
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
    assert sum(ops.get(k, 0) for k in INTEGER_KERNELS) == n_quant_convs == 24
    assert ops.get("MatMulIntegerToFloat", 0) > 0  # 1×1 residual producers run as uint8 × int8 GEMMs
    assert "Conv" not in ops
    assert not [v for v in rep["layers"].values() if not v.startswith(("qlinear", "integer"))]
    assert ops.get("QLinearConv", 0) > 0  # uniform inputs: the bottleneck-internal convs fuse into QLinearConv
    # ORT keeps them integer after its own optimisations (no float Conv appears)
    opt = optimized_op_counts(out)
    assert "Conv" not in opt and "FusedConv" not in opt
    p = parity(m, out, x)
    assert p["same_decisions"] == p["n"], p
    assert p["max_abs_logit_diff"] < 1e-3, p  # strict: the same integer codes as the fake-quant model


@pytest.mark.parametrize("quantizer,bits,cqb", [("lsq", 4, False), ("slr-n2uq", 2, True)])
def test_integer_graph_reproduces_its_torch_deploy_form(tiny_data, tmp_path, quantizer, bits, cqb):
    """ORT runs the same arithmetic as `integer_module` in PyTorch (exact accumulators, QLinearConv's float32
    requantization, the same epilogues): logits agree to float rounding, not just decisions — also in fast mode,
    where QLinearConv biases may round (the torch form rounds them the same way)."""
    import onnxruntime as ort

    from fakelite.deploy.onnx import integer_module

    torch.manual_seed(2)
    m = quantize(_random_bn(create_model("npr_resnet23"), 2),
                 QuantConfig(w_bits=bits, a_bits=bits, quantizer=quantizer, cqb=cqb, probe_size=32))
    x = _images(tiny_data, 10)
    calibrate(m, [x[:8]])
    m.eval()
    export_onnx(m, tmp_path / "q.onnx")
    sess = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = integer_module(m)(x).numpy()
    got = sess.run(None, {"input": x.numpy()})[0]
    assert np.abs(ref - got).max() < 1e-4


def test_integer_export_cqb_and_slr(tiny_data, tmp_path):
    torch.manual_seed(1)
    m = quantize(_random_bn(create_model("npr_resnet23"), 1),
                 QuantConfig(w_bits=3, a_bits=3, quantizer="slr-n2uq", cqb=True, probe_size=32))
    x = _images(tiny_data, 10)
    calibrate(m, [x[:8]])
    m.eval()
    rep = export_onnx(m, tmp_path / "s.onnx")
    # SLR's signed base grid has a non-integer zero point: padded 3×3 convs run on the codes with a border-map
    # bias (a one-input-channel float Conv of ones), so every quantized conv is an integer kernel
    assert set(rep["layers"].values()) == {"integer"}
    assert sum(rep["ops"].get(k, 0) for k in INTEGER_KERNELS) == len(rep["layers"])
    graph = onnx.load(str(tmp_path / "s.onnx")).graph
    weights = {t.name: t for t in graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in graph.node if n.op_type == "Constant"}
    float_convs = [n for n in graph.node if n.op_type == "Conv"]
    assert float_convs and all((weights.get(n.input[1]) or consts[n.input[1]]).dims[1] == 1 for n in float_convs)
    p = parity(m, tmp_path / "s.onnx", x)
    assert p["same_decisions"] == p["n"] and p["max_abs_logit_diff"] < 1e-3, p


def test_non_integer_zero_point_on_padded_conv_is_exact():
    """Levels Δ·(k − z) with z non-integer: zero padding is not a code, so the offset's share of the bias depends on
    how many taps fall inside the image. The integer form (codes conv + border map) equals the float conv."""
    from fakelite.quant.layers import QuantConv2d
    from fakelite.quant.quantizers import N2UQAct, make_weight_quantizer

    torch.manual_seed(3)
    conv = torch.nn.Conv2d(8, 6, 3, stride=2, padding=1, bias=True)
    iq = N2UQAct(2, signed=True)
    layer = QuantConv2d.from_float(conv, make_weight_quantizer("n2uq", 2, conv.weight), iq).eval()
    x = torch.randn(2, 8, 11, 9)
    iq.observe(x)
    with torch.no_grad():
        iq.offset.fill_(-0.37 * float(iq.delta))  # zero point 0.37: far from an integer
    exp = ExportConv(layer, "c").eval()
    assert exp.mode == "integer" and exp.border is not None
    with torch.no_grad():
        ref = layer.double()(x.double()).float()
        layer.float()
        got = exp(x)
        # without the border map the edges are off by the offset times the weights that fall outside the image
        no_border = got - F.conv2d(torch.ones_like(x[:, :1]), exp.border[0], exp.border[1], 2, 1)
    assert (got - ref).abs().max() < 1e-4
    interior_bias = exp.border[1] + exp.border[0].sum((1, 2, 3))  # the unpadded fold: off·ΣW everywhere
    edge = (no_border + interior_bias.reshape(1, -1, 1, 1) - ref).abs()
    assert edge[..., 0, :].max() > 1e-3 and edge[..., 1:-1, 1:-1].max() < 1e-4


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


def test_eval_scores_the_exported_file_itself(tiny_data, tmp_path):
    """`fakelite eval --model q.onnx` runs the deployed integer graph through ONNX Runtime with the same metrics as the
    .fakelite evaluation; on this quantized model every decision matches (parity above), so Acc is identical."""
    import json

    from typer.testing import CliRunner

    from fakelite.artifact import save
    from fakelite.cli import app

    torch.manual_seed(0)
    m = quantize(_random_bn(create_model("npr_resnet23")), QuantConfig(w_bits=4, a_bits=4, quantizer="lsq",
                                                                          probe_size=32))
    calibrate(m, [_images(tiny_data, 8)])
    m.eval()
    save(m, tmp_path / "q.fakelite", threshold=0.5)
    export_onnx(m, tmp_path / "q.onnx", strict=True)
    runner = CliRunner()
    res = {}
    for name in ("q.fakelite", "q.onnx"):
        r = runner.invoke(app, ["eval", "--model", str(tmp_path / name), "--data", str(tiny_data / "test"), "--quiet",
                                "--json", str(tmp_path / f"{name}.json")])
        assert r.exit_code == 0, r.output
        res[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert res["q.onnx"]["sets"].keys() == res["q.fakelite"]["sets"].keys()
    for s, a in res["q.fakelite"]["sets"].items():
        b = res["q.onnx"]["sets"][s]
        assert a["n"] == b["n"] > 0 and a["acc"] == b["acc"] and abs(a["auc"] - b["auc"]) < 1e-6
    r = runner.invoke(app, ["eval", "--model", str(tmp_path / "missing.onnx"), "--data", str(tiny_data / "test")])
    assert r.exit_code != 0 and "missing.onnx" in r.output


def test_exact_requant_moves_the_multiplier_where_no_integer_bias_is_exact():
    """QLinearConv adds an int32 bias; where no (code multiplier K, integer bias) decides every code like the float
    bias at the true multiplier, a nearby multiplier (QLinearConv's weight scale is free) usually does. Checked
    here independently of the function's own check: every reachable accumulator, ORT's float32 arithmetic."""
    from fakelite.quant.integer import exact_int_bias, exact_requant

    rng = np.random.default_rng(0)
    failed = rescued = 0
    sx, sy, zy, qmax, span, kmax = 0.05, 1.0, 0, 15, 2000, 2
    for _ in range(400):
        b, m = float(rng.uniform(-40, 40)), float(rng.uniform(0.003, 0.03))
        _, _, exact = exact_int_bias(torch.tensor([b]), torch.tensor([m * sy]), sy, torch.tensor([kmax]), zy, qmax)
        if bool(exact[0]):
            continue
        failed += 1
        found = exact_requant(b, m, kmax, zy, qmax, span, sx, sy)
        if found is None:
            continue
        rescued += 1
        k, bias, ws = found
        a = torch.arange(-span, span + 1, dtype=torch.float64)
        ref = torch.clamp(torch.round((a + b) * m) + zy, zy, qmax)
        scale = (torch.tensor(sx, dtype=torch.float32) * torch.tensor(ws, dtype=torch.float32)) / torch.tensor(
            sy, dtype=torch.float32)
        got = torch.clamp(torch.round((k * a + bias).float() * scale) + zy, zy, qmax)
        assert torch.equal(got.double(), ref), (b, m, found)
    assert failed > 20 and rescued > failed // 3, (failed, rescued)  # here 160 of 286; trained models: all
