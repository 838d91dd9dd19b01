"""The HTTP service with an injected stub detector: endpoints, the bad-input corpus, limits, auth, saturation,
timeouts and temp-file hygiene. (The real model runs in test_serve_model.py; the browser in test_serve_browser.py.)"""

from __future__ import annotations

import io
import struct
import threading
import time
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from fakelite.serve.app import create_app  # noqa: E402
from fakelite.serve.settings import ServeSettings  # noqa: E402
from fakelite.serve.sniff import sniff  # noqa: E402


# --------------------------------------------------------------------------------------------- stub detector
class StubDetector:
    """Stands in for fakelite.deploy.runtime.Detector: fixed score, optional delay per call, thread-safe."""

    def __init__(self, score: float = 0.8, delay: float = 0.0, fail: Exception | None = None):
        from fakelite.data.preprocess import Preprocess

        self.score, self.delay, self.fail = score, delay, fail
        self.threshold = 0.5
        self.preprocess = Preprocess(crop=32, npr=False)
        self.header = {"arch": {"name": "stub", "kwargs": {}}, "preprocess": self.preprocess.to_dict(),
                       "quant": {"w_bits": 4, "a_bits": 8}, "threshold": 0.5, "provenance": {"data": "none"},
                       "metrics": {"val_acc": 1.0}}
        self.model_id = "stub-0123456789"
        self.calls = 0
        self._lock = threading.Lock()

    def _scores(self, n: int) -> np.ndarray:
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return np.full(n, self.score, dtype=np.float32)

    def _pred(self, s: float):
        logit = float(np.log(s / (1 - s)))
        return types.SimpleNamespace(score=float(s), label="fake" if s >= self.threshold else "real", logit=logit)

    def predict_arrays(self, images) -> np.ndarray:
        return self._scores(len(images))

    def predict(self, x):
        return self._pred(float(self._scores(1)[0]))

    def predict_batch(self, xs):
        return [self._pred(float(s)) for s in self._scores(len(xs))]


# ------------------------------------------------------------------------------------------------- test files
def png_bytes(size: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def png_claiming(w: int, h: int) -> bytes:
    """A tiny PNG whose IHDR claims w×h pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def mp4_bytes(tmp_path: Path, n: int = 8, size: int = 48, fps: float = 4.0) -> bytes:
    import cv2

    p = tmp_path / "clip.mp4"
    vw = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    rng = np.random.default_rng(2)
    for _ in range(n):
        vw.write(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    vw.release()
    return p.read_bytes()


def client_for(detector=None, **kw) -> TestClient:
    return TestClient(create_app(detector or StubDetector(), ServeSettings(**kw)), raise_server_exceptions=False)


def tmp_files(client: TestClient) -> list[Path]:
    return list(client.app.state.service.tmpdir.iterdir())


def post_file(c: TestClient, name: str, data: bytes, ctype: str = "application/octet-stream", **kw):
    return c.post("/v1/detect", files={"file": (name, data, ctype)}, **kw)


def assert_error(r, status: int, code: str, client: TestClient | None = None) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code and body["error"]["message"], body
    assert "Traceback" not in r.text and "/tmp" not in r.text
    if client is not None:
        assert str(client.app.state.service.tmpdir) not in r.text


# ------------------------------------------------------------------------------------------------------ tests
def test_sniff_magic_bytes():
    assert sniff(png_bytes()[:64]).format == "png"
    assert sniff(jpeg_bytes()[:64]).format == "jpeg"
    assert sniff(b"GIF89a" + b"\0" * 40).format == "gif"
    assert sniff(b"RIFF\0\0\0\0WEBPVP8 ").format == "webp"
    assert sniff(b"RIFF\0\0\0\0AVI LIST").kind == "video"
    assert sniff(b"\0\0\0\x18ftypisom\0\0").format == "mp4"
    assert sniff(b"\0\0\0\x14ftypqt  \0\0").format == "mov"
    # HEIF/AVIF stills: images when the installed decoders open them (pillow-heif, Pillow's AVIF), else refused
    from fakelite.data.io import IMAGE_EXTS

    heic = sniff(b"\0\0\0\x1cftypheic\0\0")
    assert (heic.kind, heic.format) == ("image", "heic") if ".heic" in IMAGE_EXTS else heic is None
    avif = sniff(b"\0\0\0\x1cftypavif\0\0")
    assert (avif.kind, avif.format) == ("image", "avif") if ".avif" in IMAGE_EXTS else avif is None
    assert sniff(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm").format == "webm"
    assert sniff(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x88matroska").format == "mkv"
    assert sniff(b"II*\0\x08\0\0\0").format == "tiff"
    assert sniff(b"<html><body>not an image</body>") is None
    assert sniff(b"") is None


def test_detect_image_shape_and_ops_endpoints():
    det = StubDetector(score=0.8)
    with client_for(det) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").status_code == 200
        r = post_file(c, "photo.png", png_bytes(), "image/png")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["kind"] == "image" and body["format"] == "png" and body["filename"] == "photo.png"
        assert body["score"] == pytest.approx(0.8, abs=1e-6) and body["label"] == "fake"
        assert body["threshold"] == 0.5 and body["model_id"] == det.model_id
        assert body["latency_ms"] > 0 and (body["width"], body["height"]) == (48, 48)
        for f in body["faces"]:
            assert len(f["box"]) == 4
        assert "path" not in body  # server paths never reach the client
        # raw body upload works too; the content (not the name) decides
        r2 = c.post("/v1/detect", content=jpeg_bytes(), headers={"content-type": "application/octet-stream"})
        assert r2.status_code == 200 and r2.json()["format"] == "jpeg"
        # a JPEG sent with a .png name and an image/gif header is still a JPEG
        assert post_file(c, "lies.png", jpeg_bytes(), "image/gif").json()["format"] == "jpeg"
        m = c.get("/v1/model").json()
        assert m["model_id"] == det.model_id and m["quant"] == {"w_bits": 4, "a_bits": 8}
        assert m["arch"]["name"] == "stub" and m["limits"]["max_upload_mb"] == 25.0
        assert c.get("/docs").status_code == 200
        spec = c.get("/openapi.json").json()
        assert "multipart/form-data" in spec["paths"]["/v1/detect"]["post"]["requestBody"]["content"]
        text = c.get("/metrics").text
        assert 'fakelite_http_requests_total{code="200",endpoint="/v1/detect",method="POST"} 3.0' in text
        assert "fakelite_http_request_duration_seconds_bucket" in text
        assert "fakelite_http_requests_in_flight" in text and "fakelite_model_load_seconds" in text
        assert tmp_files(c) == []


def test_detect_video(tmp_path):
    det = StubDetector(score=0.3)
    with client_for(det) as c:
        clip = mp4_bytes(tmp_path)
        r = post_file(c, "clip.bin", clip, "application/octet-stream", params={"frames": 4, "faces": "off"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["kind"] == "video" and body["format"] == "mp4" and body["label"] == "real"
        assert len(body["frames"]) == 4 and body["aggregate"] == "mean"
        assert [fr["score"] for fr in body["frames"]] == pytest.approx([0.3] * 4)
        assert body["score"] == pytest.approx(0.3) and body["duration_s"] == pytest.approx(2.0, abs=0.3)
        assert body["input"] == "whole frames"  # what was scored (it was null for videos)
        # faces=auto on a clip without faces: a 200 with no score and a note, never a made-up 0.5
        r = c.post("/v1/detect", data={"frames": "3", "aggregate": "confident"},
                   files={"file": ("clip.mp4", clip, "video/mp4")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["score"] is None and body["label"] is None and "no face" in body["note"]
        assert body["input"] is None  # nothing was scored
        assert len(body["frames"]) == 3 and body["aggregate"] == "confident"
        assert_error(post_file(c, "clip.mp4", clip, params={"frames": 999}), 400, "bad_parameter")
        assert_error(post_file(c, "clip.mp4", clip, params={"aggregate": "max"}), 400, "bad_parameter")
        assert tmp_files(c) == []


def test_video_limits(tmp_path):
    with client_for(max_video_seconds=1.0) as c:
        assert_error(post_file(c, "long.mp4", mp4_bytes(tmp_path, n=12, fps=4.0)), 413, "video_too_long", c)
    with client_for(max_pixels=1000) as c:
        assert_error(post_file(c, "big.mp4", mp4_bytes(tmp_path, size=48)), 413, "video_too_large", c)
        assert tmp_files(c) == []


@pytest.mark.parametrize("name,data,ctype,status,code", [
    ("trunc.jpg", jpeg_bytes()[:300], "image/jpeg", 422, "corrupt_image"),
    ("empty.png", b"", "image/png", 400, "empty_file"),
    ("bomb.png", png_claiming(30000, 30000), "image/png", 413, "image_too_large"),
    ("notes.jpg", b"just some text pretending to be a JPEG\n" * 4, "image/jpeg", 415, "unsupported_media_type"),
    ("script.png", b"<?php echo 1; ?>", "image/png", 415, "unsupported_media_type"),
    ("broken.mp4", b"\0\0\0\x18ftypisom" + bytes(range(256)) * 8, "video/mp4", 422, "corrupt_video"),
    ("broken.mkv", b"\x1a\x45\xdf\xa3" + b"\xff" * 500, "video/x-matroska", 422, "corrupt_video"),
])
def test_bad_input_corpus(name, data, ctype, status, code):
    with client_for() as c:
        r = post_file(c, name, data, ctype)
        assert_error(r, status, code, c)
        assert tmp_files(c) == []


def test_pixel_limit_is_a_setting():
    with client_for(max_pixels=40 * 40) as c:
        r = post_file(c, "a.png", png_bytes(48))
        assert_error(r, 413, "image_too_large", c)
        assert "2,304" in r.json()["error"]["message"]
        assert post_file(c, "b.png", png_bytes(40)).status_code == 200


def test_request_shape_errors():
    with client_for() as c:
        assert_error(c.post("/v1/detect", json={"file": "x"}), 415, "unsupported_content_type")
        assert_error(c.post("/v1/detect", content=b"x", headers={"content-type": "text/plain"}), 415,
                     "unsupported_content_type")
        assert_error(c.post("/v1/detect", data={"frames": "3"}, files={"other": ("", b"", "text/plain")}), 400,
                     "missing_file")
        assert_error(c.post("/v1/detect", content=b"--x\r\n\r\n", headers={"content-type": "multipart/form-data"}),
                     400, "bad_multipart")
        assert_error(c.post("/v1/detect", content=b"--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--b--\r\n",
                            headers={"content-type": "multipart/form-data; boundary=b"}), 400, "missing_file")
        assert_error(post_file(c, "a.png", png_bytes(), params={"faces": "maybe"}), 400, "bad_parameter")
        assert_error(c.get("/v1/detect"), 405, "method_not_allowed")
        assert_error(c.get("/no/such/page"), 404, "not_found")
        assert tmp_files(c) == []


def test_upload_size_limit_streamed_and_declared():
    big = b"\xff\xd8\xff" + b"\0" * 200_000
    with client_for(max_upload_mb=0.05) as c:  # 52 KB
        # declared Content-Length over the limit: refused before the body is read
        assert_error(post_file(c, "big.jpg", big), 413, "upload_too_large", c)

        # chunked body without a Content-Length: cut off while streaming
        def chunks():
            yield b"--bnd\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n\r\n"
            for _ in range(50):
                yield b"\xff\xd8\xff" + b"\0" * 8192
            yield b"\r\n--bnd--\r\n"

        r = c.post("/v1/detect", content=chunks(), headers={"content-type": "multipart/form-data; boundary=bnd"})
        assert_error(r, 413, "upload_too_large", c)
        # a raw body too
        assert_error(c.post("/v1/detect", content=iter([big]), headers={"content-type": "application/octet-stream"}),
                     413, "upload_too_large", c)
        assert post_file(c, "ok.png", png_bytes(48)).status_code == 200
        assert tmp_files(c) == []
        assert 'fakelite_http_requests_total{code="413",endpoint="/v1/detect",method="POST"} 3.0' in c.get("/metrics").text


def test_api_key(monkeypatch):
    with client_for(api_key="s3cret-key") as c:
        assert_error(post_file(c, "a.png", png_bytes()), 401, "unauthorized")
        assert_error(post_file(c, "a.png", png_bytes(), headers={"X-API-Key": "wrong"}), 401, "unauthorized")
        assert_error(c.get("/v1/model"), 401, "unauthorized")
        assert_error(c.get("/metrics"), 401, "unauthorized")
        assert post_file(c, "a.png", png_bytes(), headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert post_file(c, "a.png", png_bytes(), headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert c.get("/v1/model", headers={"authorization": "bearer s3cret-key"}).status_code == 200
        # liveness, readiness and the page stay open
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
        assert c.get("/").status_code == 200
        # the comparison is constant-time
        import hmac

        calls = []
        real = hmac.compare_digest
        monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
        post_file(c, "a.png", png_bytes(), headers={"X-API-Key": "nope"})
        assert calls
    with client_for() as c:  # no key configured: open
        assert post_file(c, "a.png", png_bytes()).status_code == 200


def test_saturation_answers_503_with_retry_after():
    det = StubDetector(delay=0.6)
    with client_for(det, max_concurrency=1, max_queue=1, retry_after_s=3) as c:
        results: list = []

        def one(i: int) -> None:
            results.append(post_file(c, f"{i}.png", png_bytes(seed=i)))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in results)
        assert codes.count(200) >= 2 and codes.count(503) >= 1 and set(codes) <= {200, 503}, codes
        assert codes.count(200) <= 3  # never more than running + queued + one that arrived after a slot freed
        for r in results:
            if r.status_code == 503:
                assert_error(r, 503, "busy")
                assert r.headers["Retry-After"] == "3"
        assert det.calls == codes.count(200)
        assert tmp_files(c) == []
        assert 'fakelite_rejected_total{reason="busy"}' in c.get("/metrics").text


def test_timeout_504_and_cleanup():
    det = StubDetector(delay=1.5)
    with client_for(det, request_timeout_s=0.3, max_concurrency=1) as c:
        t0 = time.perf_counter()
        r = post_file(c, "slow.png", png_bytes())
        assert time.perf_counter() - t0 < 1.2
        assert_error(r, 504, "timeout", c)
        assert tmp_files(c) == []  # deleted at once, while the worker thread finishes
        # the slot stays taken until the thread really finishes: a new request queues, then succeeds or times out
        deadline = time.time() + 5
        while c.app.state.service.metrics.detect_running._value.get() > 0 and time.time() < deadline:
            time.sleep(0.05)
        assert c.app.state.service.metrics.detect_running._value.get() == 0
        assert tmp_files(c) == []


def test_internal_errors_do_not_leak():
    det = StubDetector(fail=RuntimeError("boom at /srv/secret/weights.bin"))
    with client_for(det) as c:
        r = post_file(c, "a.png", png_bytes())
        assert r.status_code in (422, 500), r.text
        assert "/srv/secret" not in r.text and "Traceback" not in r.text and "error" in r.json()
        assert tmp_files(c) == []


def test_temp_dir_private_and_removed_on_shutdown():
    c = client_for()
    with c:
        d = c.app.state.service.tmpdir
        assert d.is_dir() and (d.stat().st_mode & 0o777) == 0o700
        post_file(c, "a.png", png_bytes())
        post_file(c, "b.jpg", b"")
        assert tmp_files(c) == []
    assert not d.exists()
    with c:  # started again: a fresh private folder and a working pool
        assert post_file(c, "a.png", png_bytes()).status_code == 200
        assert tmp_files(c) == []


def test_cors_off_by_default_and_configurable():
    with client_for() as c:
        r = c.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    with client_for(cors_origins=["https://ok.example"]) as c:
        r = c.options("/v1/detect", headers={"Origin": "https://ok.example", "Access-Control-Request-Method": "POST"})
        assert r.headers.get("access-control-allow-origin") == "https://ok.example"
        r = c.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_page_and_assets_are_local():
    with client_for() as c:
        r = c.get("/")
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        assert "default-src 'self'" in r.headers["content-security-policy"]
        html = r.text
        assert 'type="file"' in html and 'aria-live="polite"' in html and "http://" not in html and "https://" not in html
        for asset in ("/static/app.js", "/static/style.css"):
            assert asset in html
            a = c.get(asset)
            assert a.status_code == 200 and a.headers["x-content-type-options"] == "nosniff"
            assert "https://" not in a.text and "http://" not in a.text


def test_readyz_waits_for_model_and_reports_failure(tmp_path):
    bad = tmp_path / "broken.fakelite"
    bad.write_bytes(b"not a model")
    with TestClient(create_app(bad, ServeSettings())) as c:
        deadline = time.time() + 10
        r = c.get("/readyz")
        while r.json()["error"]["code"] == "model_loading" and time.time() < deadline:
            time.sleep(0.05)
            r = c.get("/readyz")
        assert_error(r, 503, "model_failed")
        assert str(tmp_path) not in r.text
        assert_error(post_file(c, "a.png", png_bytes()), 503, "model_failed")
        assert c.get("/healthz").status_code == 200


def test_settings_validation():
    with pytest.raises(ValueError, match="max_upload_mb"):
        ServeSettings(max_upload_mb=0).validate()
    with pytest.raises(ValueError, match="max_queue"):
        ServeSettings(max_queue=-1).validate()
    s = ServeSettings(model="m.fakelite", api_key="k", cors_origins=["https://a"])
    assert ServeSettings.from_json(s.to_json()) == s


def test_docs_page_is_served_without_a_cdn():
    """/docs loads Swagger UI from the app itself (works offline), and the assets are really there."""
    import re

    with client_for() as c:
        r = c.get("/docs")
        assert r.status_code == 200
        urls = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", r.text)
        assert urls and not [u for u in urls if u.startswith("http")], urls
        for u in urls:
            assert c.get(u).status_code == 200, u
        assert c.get("/openapi.json").json()["info"]["title"] == "fakelite"
