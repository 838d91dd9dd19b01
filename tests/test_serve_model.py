"""The HTTP service over a real trained model (tiny_fp_model): the API answers what the runtime computes."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from fakelite.serve.app import create_app  # noqa: E402
from fakelite.serve.settings import ServeSettings  # noqa: E402


def _wait_ready(c: TestClient, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = c.get("/readyz")
        if r.status_code == 200:
            return r.json()
        assert r.json()["error"]["code"] == "model_loading", r.text
        time.sleep(0.05)
    raise AssertionError("model did not load")


def test_real_model_end_to_end(tiny_fp_model, tiny_data, tmp_path):
    import cv2

    from fakelite.data.io import load_rgb
    from fakelite.deploy.runtime import Detector

    _, model_path = tiny_fp_model
    ref = Detector.load(model_path)
    images = sorted((tiny_data / "test" / "gen_a" / "1_fake").glob("*.png"))[:2] + \
        sorted((tiny_data / "test" / "gen_a" / "0_real").glob("*.png"))[:2]
    with TestClient(create_app(model_path, ServeSettings(threads=1))) as c:
        ready = _wait_ready(c)
        assert ready["model_id"] == ref.model_id
        for p in images:
            r = c.post("/v1/detect", files={"file": (p.name, p.read_bytes(), "image/png")})
            assert r.status_code == 200, r.text
            body = r.json()
            want = float(ref.predict_arrays([load_rgb(p)])[0])  # 32×32 texture: no face, the whole image is scored
            assert body["score"] == pytest.approx(want, abs=1e-5)
            assert body["label"] == ("fake" if want >= ref.threshold else "real")
            assert body["threshold"] == pytest.approx(ref.threshold) and body["model_id"] == ref.model_id
            assert body["input"] == "whole image" and body["faces"] == []

        # a short video, whole frames scored: per-frame scores and their mean
        clip = tmp_path / "clip.avi"
        vw = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (32, 32))
        frames = [load_rgb(p) for p in images]
        for fr in frames:
            vw.write(np.ascontiguousarray(fr[..., ::-1]))
        vw.release()
        r = c.post("/v1/detect?faces=off&frames=4", files={"file": ("clip.avi", clip.read_bytes(), "video/x-msvideo")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["kind"] == "video" and body["format"] == "avi" and len(body["frames"]) == 4
        scores = [f["score"] for f in body["frames"]]
        assert body["score"] == pytest.approx(float(np.mean(scores)), abs=1e-6)
        assert [f["index"] for f in body["frames"]] == [0, 1, 2, 3]

        m = c.get("/v1/model").json()
        assert m["model_id"] == ref.model_id and m["arch"]["name"] == "npr_resnet23"
        assert m["quant"] is None and m["threshold"] == pytest.approx(ref.threshold)
        assert m["load_seconds"] > 0
        if "cost" in m:  # fakelite.quant.cost is importable here: the served model's cost comes along
            assert m["cost"]["params"] > 0
        text = c.get("/metrics").text
        load_line = next(ln for ln in text.splitlines() if ln.startswith("fakelite_model_load_seconds "))
        assert float(load_line.split()[1]) > 0
        assert "fakelite_model_ready 1.0" in text
        assert list(Path(c.app.state.service.tmpdir).iterdir()) == []
