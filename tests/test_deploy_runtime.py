"""Detector: one contract over torch and ONNX Runtime; preprocessing from the artifact; thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from fakelite.artifact import ArtifactError
from fakelite.data.folders import labelled_images
from fakelite.deploy.runtime import Detector, Prediction


@pytest.fixture(scope="module")
def onnx_model(tiny_fp_model, tmp_path_factory):
    from fakelite.artifact import load
    from fakelite.deploy.onnx import export_onnx

    out = tmp_path_factory.mktemp("rt") / "m.onnx"
    export_onnx(load(tiny_fp_model[1]), out, size=32)
    return out


def _paths(tiny_data, n=12):
    return [p for p, _ in (labelled_images(tiny_data / "test" / "gen_a") + labelled_images(tiny_data / "test" / "gen_b"))][:n]


def test_torch_and_onnx_agree(tiny_fp_model, onnx_model, tiny_data):
    dt = Detector.load(tiny_fp_model[1])
    do = Detector.load(onnx_model)
    assert dt.backend == "torch" and do.backend in ("onnxruntime", "openvino")  # auto: the faster here
    assert dt.threshold == pytest.approx(do.threshold) and dt.preprocess == do.preprocess
    assert dt.model_id == do.model_id and dt.model_id.startswith("npr_resnet23-")
    paths = _paths(tiny_data)
    pt, po = dt.predict_batch(paths), do.predict_batch(paths)
    assert [p.label for p in pt] == [p.label for p in po]
    assert max(abs(a.logit - b.logit) for a, b in zip(pt, po, strict=True)) < 1e-4
    p = pt[0]
    assert isinstance(p, Prediction) and p.label in ("real", "fake") and 0 <= p.score <= 1
    assert p.label == ("fake" if p.score >= dt.threshold else "real")


def test_input_kinds_give_the_same_prediction(onnx_model, tiny_data):
    d = Detector.load(onnx_model)
    path = _paths(tiny_data, 1)[0]
    arr = np.asarray(Image.open(path).convert("RGB"))
    a, b, c = d.predict(path), d.predict(arr), d.predict(Image.open(path))
    assert a.logit == pytest.approx(b.logit) == pytest.approx(c.logit)
    s = d.predict_arrays([arr, arr[:20, :18]])
    assert s.shape == (2,) and s[0] == pytest.approx(a.score)


def test_concurrent_predictions_equal_serial(tiny_fp_model, onnx_model, tiny_data):
    paths = _paths(tiny_data, 8)
    for model in (tiny_fp_model[1], onnx_model):
        d = Detector.load(model)
        serial = [d.predict(p).logit for p in paths]
        out: dict[int, list[float]] = {}

        def work(k: int, d=d, out=out) -> None:
            out[k] = [d.predict(p).logit for p in paths]

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(np.allclose(out[k], serial, atol=1e-6) for k in range(4))


def test_bad_model_files(tmp_path):
    with pytest.raises(ArtifactError, match="no such model file"):
        Detector.load(tmp_path / "missing.onnx")
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ArtifactError, match="x.onnx"):
        Detector.load(bad)
    with pytest.raises(ArtifactError, match="unknown model type"):
        Detector.load(bad.with_suffix(".bin")) if bad.with_suffix(".bin").write_bytes(b"x") else None
