"""TFLite export (litert-torch) + ai-edge-litert interpreter parity; skipped without the `tflite` extra."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import randomize_bn

try:
    import ai_edge_litert  # noqa: F401
    import litert_torch  # noqa: F401
except ImportError:
    pytest.skip("litert-torch not installed: pip install 'fakelite[tflite]'", allow_module_level=True)

from fakelite.data.folders import labelled_images  # noqa: E402
from fakelite.data.io import load_rgb  # noqa: E402
from fakelite.data.transforms import eval_transform  # noqa: E402
from fakelite.deploy.litert import read_sidecar  # noqa: E402
from fakelite.deploy.litert_export import export_tflite  # noqa: E402
from fakelite.deploy.parity import parity_tflite  # noqa: E402
from fakelite.deploy.runtime import Detector  # noqa: E402
from fakelite.models import create_model  # noqa: E402
from fakelite.quant import QuantConfig, calibrate, quantize  # noqa: E402


def _tiny(seed=0):
    torch.manual_seed(seed)
    m = create_model("npr_resnet23")
    m.preprocess = dataclasses.replace(m.preprocess, crop=32)
    return randomize_bn(m, seed).eval()


def _images(root, pre, n=12):
    items = labelled_images(root / "test" / "gen_a") + labelled_images(root / "test" / "gen_b")
    return torch.stack([eval_transform(load_rgb(p), pre) for p, _ in items[:n]])


def test_fp32_tflite_parity_sidecar_and_detector(tiny_data, tmp_path):
    torch.set_num_threads(1)
    m = _tiny()
    x = _images(tiny_data, m.preprocess)
    out = tmp_path / "fp.tflite"
    rep = export_tflite(m, out)
    assert rep["kind"] == "tflite-fp32" and out.stat().st_size == rep["bytes"] > 0
    p = parity_tflite(m, out, x)
    assert p["same_decisions"] == p["n"] == len(x)
    assert p["max_abs_logit_diff"] < 1e-4, p
    head = read_sidecar(out)
    assert head["export"]["format"] == "tflite" and head["preprocess"]["crop"] == 32
    assert json.loads((tmp_path / "fp.tflite.json").read_text()) == head
    det = Detector.load(out, threads=1)
    assert det.backend == "litert" and det.model_id.endswith("-tflite-fp32")
    with torch.no_grad():
        ref = m(x[:2]).reshape(-1).double().numpy()
    got = det._run(x[:2].numpy())
    assert np.abs(ref - got).max() < 1e-4


def test_int8_tflite_is_smaller_and_close(tiny_data, tmp_path):
    torch.set_num_threads(1)
    m = _tiny(1)
    x = _images(tiny_data, m.preprocess)
    fp = export_tflite(m, tmp_path / "fp.tflite")
    with pytest.raises(ValueError, match="calibration"):
        export_tflite(m, tmp_path / "nocal.tflite", int8=True)
    q = export_tflite(m, tmp_path / "i8.tflite", int8=True, calib=x.numpy()[:8])
    assert q["kind"] == "tflite-int8"
    assert q["bytes"] < 0.4 * fp["bytes"]  # int8 weights: ~¼ of the FP32 file
    p = parity_tflite(m, tmp_path / "i8.tflite", x)
    with torch.no_grad():
        spread = float(m(x).std())
    assert p["mean_abs_logit_diff"] < 0.5 * spread + 1e-3, (p, spread)  # close, not exact: int8 rounding


def test_quantized_model_exports_as_integer_emulation(tiny_data, tmp_path):
    torch.set_num_threads(1)
    m = _tiny(2)
    m = quantize(m, QuantConfig(w_bits=3, a_bits=3, quantizer="slr-n2uq", cqb=True, probe_size=32))
    m.preprocess = dataclasses.replace(m.preprocess, crop=32)
    x = _images(tiny_data, m.preprocess)
    calibrate(m, [x[:8]])
    m.eval()
    out = tmp_path / "q.tflite"
    rep = export_tflite(m, out)
    assert rep["kind"] == "tflite-integer-emulated"
    p = parity_tflite(m, out, x)
    assert p["same_decisions"] == p["n"], p
    assert p["max_abs_logit_diff"] < 1e-2, p
