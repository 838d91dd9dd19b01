"""`--backend auto`: the choice logic (driven by a fake clock), its cache per host + model, and the Detector wiring."""

from __future__ import annotations

import json

import pytest
import torch

from fakelite.deploy.autoselect import CACHE_FILE, time_detector
from fakelite.deploy.runtime import choose_backend

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def fp_onnx(tiny_fp_model, tmp_path_factory):
    from fakelite.artifact import load
    from fakelite.deploy.onnx import export_onnx

    out = tmp_path_factory.mktemp("auto") / "m.onnx"
    export_onnx(load(tiny_fp_model[1]), out, size=32)
    return out


def _fake(ms: dict[str, float]):
    calls: list[str] = []

    def measure(det):
        calls.append(det.backend)
        return ms[det.backend]

    return measure, calls


def test_choice_follows_the_clock_and_is_cached(fp_onnx, tmp_path):
    measure, calls = _fake({"openvino": 1.0, "onnxruntime": 2.5})
    c, loaded = choose_backend(fp_onnx, 1, measure=measure, cache=tmp_path)
    assert c.backend == "openvino" and not c.cached and set(loaded) == {"onnxruntime", "openvino"}
    assert sorted(calls) == ["onnxruntime", "openvino"]
    assert "fastest" in c.reason and "1.00 ms" in c.reason and "onnxruntime 2.50 ms" in c.reason
    rec = json.loads((tmp_path / CACHE_FILE).read_text())
    (entry,) = rec.values()
    assert entry["backend"] == "openvino" and entry["median_ms"] == {"openvino": 1.0, "onnxruntime": 2.5}
    assert entry["host"]["cpu"] and isinstance(entry["host"]["flags"], list)

    # the cache answers the next load without probing (a clock that would now pick onnxruntime is not consulted)
    measure2, calls2 = _fake({"openvino": 9.0, "onnxruntime": 1.0})
    c2, loaded2 = choose_backend(fp_onnx, 1, measure=measure2, cache=tmp_path)
    assert c2.backend == "openvino" and c2.cached and not calls2 and loaded2 == {}
    # another thread count is another probe; without the cache the clock decides again
    c3, _ = choose_backend(fp_onnx, 2, measure=measure2, cache=tmp_path)
    assert c3.backend == "onnxruntime" and len(json.loads((tmp_path / CACHE_FILE).read_text())) == 2
    c4, _ = choose_backend(fp_onnx, 1, measure=measure2, cache=tmp_path, use_cache=False)
    assert c4.backend == "onnxruntime"


def test_a_runtime_that_cannot_load_drops_out(fp_onnx, tmp_path):
    from fakelite.deploy.runtime import Detector

    def load(p, b, t):
        if b == "openvino":
            raise ValueError(f"{p}: OpenVINO cannot read it (unsupported op)")
        return Detector.load_backend(p, b, t)

    measure, calls = _fake({"openvino": 1.0, "onnxruntime": 2.0})
    c, _ = choose_backend(fp_onnx, 1, load=load, measure=measure, cache=tmp_path)
    assert c.backend == "onnxruntime" and not calls
    assert c.skipped == {"openvino": "OpenVINO cannot read it (unsupported op)"} and "only runtime" in c.reason


def test_ort_integer_graph_is_not_offered_to_openvino(tiny_data, tmp_path):
    """The ORT integer graph's com.microsoft op is unreadable for OpenVINO: auto must fall back to ORT."""
    from fakelite.deploy.onnx import export_onnx
    from fakelite.models import create_model
    from fakelite.quant import QuantConfig, calibrate, quantize

    torch.manual_seed(0)
    m = quantize(create_model("npr_resnet23"), QuantConfig(w_bits=4, a_bits=4, quantizer="lsq", probe_size=32))
    calibrate(m, [torch.randn(4, 3, 32, 32)])
    export_onnx(m.eval(), tmp_path / "int.onnx")
    c, _ = choose_backend(tmp_path / "int.onnx", 1, cache=tmp_path)
    assert c.backend == "onnxruntime" and "openvino" in c.skipped and "OpenVINO cannot read it" in c.skipped["openvino"]


def test_time_detector_takes_the_median_of_the_timer():
    class Det:
        n = 0

        def logits(self, x):
            self.n += 1

    ticks = iter([0.0, 0.004, 1.0, 1.002, 2.0, 2.009])  # 4, 2, 9 ms
    d = Det()
    assert time_detector(d, 8, warmup=1, runs=3, timer=lambda: next(ticks)) == pytest.approx(4.0)
    assert d.n == 4


def test_detector_auto_records_its_reason(fp_onnx, tiny_fp_model, tmp_path, monkeypatch):
    from fakelite.deploy.runtime import Detector

    monkeypatch.setenv("FAKELITE_CACHE", str(tmp_path))
    d = Detector.load(fp_onnx, threads=1)
    assert d.backend in ("onnxruntime", "openvino") and d.backend_reason.startswith(d.backend)
    assert set(d.backend_choice["median_ms"]) == {"onnxruntime", "openvino"}
    d2 = Detector.load(fp_onnx, threads=1)
    assert d2.backend == d.backend and d2.backend_reason.endswith("(cached probe)")
    t = Detector.load(tiny_fp_model[1])
    assert t.backend == "torch" and "reference graph" in t.backend_reason
    assert Detector.load(fp_onnx, backend="onnx").backend_reason == "onnxruntime requested"
