"""End to end in a real browser: Debian's headless Chromium, driven by Playwright, loads the page from a real
uvicorn server on a free loopback port, uploads an image through the file input (reached by keyboard) and reads
the verdict from the page. Saves a screenshot (docs/serve_screenshot.png when FAKELITE_SCREENSHOT=1).

Skips, with the reason, only when Chromium is missing (scripts/ensure_chromium.sh installs it) or Playwright
is not installed."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

CHROMIUM = os.environ.get("FAKELITE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ROOT = Path(__file__).resolve().parent.parent


def _chromium() -> str:
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not path:
        pytest.skip(f"Chromium not found at {CHROMIUM} (run scripts/ensure_chromium.sh to install it)")
    return path


class LoopbackServer:
    """uvicorn serving `app` on a free 127.0.0.1 port in a background thread (a real HTTP server)."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready within 60 s")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def _test_image(tiny_data: Path, out: Path, face: bool, facesynth: Path | None = None) -> Path:
    """The image to upload, under a neutral name (nothing in the name gives the answer away).

    Normally a 64×64 FaceSynth fake (tiny dataset's 32×32 fake when FaceSynth cannot be built offline). For the documentation screenshot (face=True) a frame with a face
    from the cached sample clip (fakelite.deploy.samples), so the page shows a face box; the tiny model's score
    on it means nothing, the picture shows the page."""
    dst = out / "upload.png"
    if face:
        try:
            import cv2

            from fakelite.deploy.samples import fetch

            cap = cv2.VideoCapture(str(fetch("single_face.mp4")))
            cap.set(cv2.CAP_PROP_POS_FRAMES, 10)
            ok, frame = cap.read()
            cap.release()
            if ok:
                Image.fromarray(np.ascontiguousarray(frame[..., ::-1])).save(dst)
                return dst
        except Exception:  # noqa: BLE001 - offline: fall back to the tiny image
            pass
    if facesynth is not None:  # a FaceSynth fake face (the scenario)
        src = sorted((facesynth / "test" / "transposed" / "1_fake").glob("*.png"))[0]
    else:  # offline without the CelebA wheel: a tiny synthetic fake
        src = sorted((tiny_data / "test" / "gen_a" / "1_fake").glob("*.png"))[0]
    Image.fromarray(np.asarray(Image.open(src).convert("RGB"))).save(dst)
    return dst


def test_page_upload_in_chromium(tiny_fp_model, tiny_data, facesynth_quick, tmp_path):
    exe = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    from fakelite.serve.app import create_app
    from fakelite.serve.settings import ServeSettings

    _, model_path = tiny_fp_model
    for_docs = bool(os.environ.get("FAKELITE_SCREENSHOT"))
    image = _test_image(tiny_data, tmp_path, face=for_docs, facesynth=facesynth_quick)
    shot = ROOT / "docs" / "serve_screenshot.png" if for_docs else tmp_path / "shot.png"
    app = create_app(model_path, ServeSettings(threads=1))
    with LoopbackServer(app) as srv:
        expected = httpx.post(srv.url + "/v1/detect", files={"file": ("upload.png", image.read_bytes(), "image/png")},
                              timeout=30).json()
        assert expected["label"] in ("real", "fake")
        with sync_api.sync_playwright() as pw:
            try:
                browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True, timeout=60_000)
            except Exception as e:  # noqa: BLE001 - a Chromium that cannot start is "not available here"
                pytest.skip(f"Chromium at {exe} did not start: {str(e).splitlines()[0][:200]}")
            try:
                page = browser.new_page(viewport={"width": 1000, "height": 720}, device_scale_factor=1)
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.goto(srv.url + "/", wait_until="load")
                assert page.title().startswith("fakelite")
                # (no wait_for_function: the page's CSP forbids the eval it needs, as it should)
                sync_api.expect(page.locator("#model-info")).to_contain_text("Model ", timeout=15_000)
                # keyboard only: Tab from the top reaches the file input (after the skip link), with a focus ring
                page.keyboard.press("Tab")
                page.keyboard.press("Tab")
                assert page.evaluate("document.activeElement.id") == "file"
                outline = page.evaluate("getComputedStyle(document.getElementById('file-button')).outlineStyle")
                assert outline == "solid"
                # upload through the file input, as a user picking the file does
                page.set_input_files("#file", str(image))
                page.wait_for_selector("#verdict .pill", timeout=30_000)
                label = page.inner_text("#verdict .pill").strip().lower()
                assert label == expected["label"]
                assert page.get_attribute("#verdict", "aria-live") == "polite"
                verdict_text = page.inner_text("#verdict")
                assert f"score {expected['score']:.3f}" in verdict_text
                page.wait_for_selector("#preview:not([hidden])", timeout=10_000)
                assert page.evaluate("document.getElementById('canvas').width") > 0
                assert "upload.png" in page.inner_text("#details")
                assert page.locator("#caption").inner_text().startswith("Face boxes" if expected["faces"] else "No face")
                page.screenshot(path=str(shot), full_page=True)
                # a bad file shows the server's message, not a crash
                bad = tmp_path / "notes.jpg"
                bad.write_text("this is text, not a JPEG")
                page.set_input_files("#file", str(bad))
                page.wait_for_selector("#verdict.error", timeout=15_000)
                assert "not a supported image" in page.inner_text("#verdict")
                assert not [e for e in errors if "415" not in e], errors  # the 415 itself is logged by the browser
            finally:
                browser.close()
    assert shot.exists() and shot.stat().st_size > 5000


def test_docs_page_renders_in_chromium(tiny_fp_model):
    """/docs in the real browser: Swagger UI must render FastAPI's OpenAPI 3.1 document (Swagger UI 3 from
    swagger-ui-bundle showed "Unable to render this definition" while every request answered 200)."""
    exe = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) is not installed")
    from fakelite.serve.app import create_app
    from fakelite.serve.settings import ServeSettings

    _, model_path = tiny_fp_model
    app = create_app(model_path, ServeSettings(threads=1))
    with LoopbackServer(app) as srv:
        assert httpx.get(srv.url + "/openapi.json").json()["openapi"].startswith("3.1")
        with sync_api.sync_playwright() as pw:
            try:
                browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True, timeout=60_000)
            except Exception as e:  # noqa: BLE001 - a Chromium that cannot start is "not available here"
                pytest.skip(f"Chromium at {exe} did not start: {str(e).splitlines()[0][:200]}")
            try:
                page = browser.new_page(viewport={"width": 1000, "height": 720})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                external: list[str] = []
                page.on("request", lambda r: external.append(r.url) if not r.url.startswith(srv.url) else None)
                page.goto(srv.url + "/docs", wait_until="load")
                page.wait_for_selector(".opblock-summary-path", timeout=30_000)
                body = page.inner_text("body")
                assert "Unable to render" not in body
                paths = page.locator(".opblock-summary-path").all_inner_texts()
                assert {"/v1/detect", "/v1/model", "/readyz"} <= {p.strip() for p in paths}, paths
                page.locator(".opblock-summary-path", has_text="/v1/detect").first.click()
                sync_api.expect(page.locator(".opblock-body").first).to_contain_text("multipart/form-data",
                                                                                    timeout=10_000)
                assert not errors, errors
                assert not [u for u in external if not u.startswith(("data:", "blob:"))], external
            finally:
                browser.close()
