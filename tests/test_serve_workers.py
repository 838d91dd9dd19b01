"""`fakelite serve --workers 2`: one port, metrics summed over workers, /readyz names the model and version, and
the service keeps no state between requests (same request → same answer, on any worker or replica)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import randomize_bn
from fastapi.testclient import TestClient
from PIL import Image

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    import fakelite

    torch.manual_seed(1)
    m = randomize_bn(fakelite.create_model("npr_resnet23").eval(), seed=1)
    m.preprocess = dataclasses.replace(m.preprocess, crop=32)  # small inputs: a fast test
    return fakelite.save(m, tmp_path_factory.mktemp("serve_workers") / "m.fakelite")


def _pngs(n: int) -> list[bytes]:
    rng = np.random.default_rng(3)
    out = []
    for _ in range(n):
        b = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(b, "PNG")
        out.append(b.getvalue())
    return out


def _stable(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k != "latency_ms"}


def test_two_replicas_answer_identically_and_keep_no_state(model_file, tmp_path):
    """Two app instances (= two replicas behind a load balancer): the same request gives the same answer on
    either, in any order, interleaved with other requests; nothing is left behind between requests."""
    from fakelite.serve import ServeSettings, create_app

    imgs = _pngs(3)
    apps = [create_app(str(model_file), ServeSettings(tmp_dir=str(tmp_path))) for _ in range(2)]
    with TestClient(apps[0]) as a, TestClient(apps[1]) as b:
        for c in (a, b):
            t0 = time.monotonic()
            while c.get("/readyz").status_code != 200 and time.monotonic() - t0 < 60:
                time.sleep(0.05)
        first = [_stable(a.post("/v1/detect", files={"file": (f"{i}.png", d)}).json()) for i, d in enumerate(imgs)]
        assert len({f["score"] for f in first}) == 3  # different inputs, different scores
        # reversed order, other replica, other requests in between, octet-stream instead of multipart
        for i in (2, 0, 1, 0):
            for c in (b, a):
                r = c.post("/v1/detect", content=imgs[i], headers={"Content-Type": "application/octet-stream"})
                got = _stable(r.json())
                got["filename"] = first[i]["filename"]
                assert got == first[i]
        svc = [app.state.service for app in apps]
        assert all(s.admitted == 0 for s in svc)
        assert all(not any(s.tmpdir.iterdir()) for s in svc)  # no upload survives its request
        ready = a.get("/readyz").json()
        assert ready["model"]["id"] == first[0]["model_id"] == b.get("/readyz").json()["model"]["id"]
        assert ready["model"]["arch"] == "npr_resnet23" and ready["model"]["file"] == "m.fakelite"
        assert re.fullmatch(r"\d+(\.\d+)*.*", ready["version"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _counter(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_serve_two_workers_one_port_metrics_summed(model_file, tmp_path):
    port = _free_port()
    mp_dir = tmp_path / "prom"
    mp_dir.mkdir()
    (mp_dir / "counter_999999.db").write_bytes(b"stale")  # a previous run's file must not count
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PROMETHEUS_MULTIPROC_DIR": str(mp_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "fakelite", "serve", "--model", str(model_file), "--port", str(port),
                             "--workers", "2", "--threads", "1", "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() - t0 < 120, "server not ready"
            try:
                m = httpx.get(url + "/metrics", timeout=5).text
                if httpx.get(url + "/readyz", timeout=5).status_code == 200 and "fakelite_model_ready 1.0" in m \
                        and len({p.name.rsplit("_", 1)[1] for p in mp_dir.glob("gauge_livemin_*.db")}) == 2:
                    break  # both workers have loaded the model (livemin over the live workers is 1)
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert not (mp_dir / "counter_999999.db").exists()
        ready = httpx.get(url + "/readyz").json()
        assert ready["status"] == "ready" and ready["model"]["id"] and ready["version"]
        imgs = _pngs(2)

        def post(i: int) -> dict:  # a new connection per request: the kernel hands it to either worker
            r = httpx.post(url + "/v1/detect", files={"file": (f"img{i % 2}.png", imgs[i % 2])}, timeout=60)
            assert r.status_code in (200, 503), r.text
            return r.json() if r.status_code == 200 else {}

        answers: list[dict] = []
        with ThreadPoolExecutor(4) as ex:
            for _ in range(10):  # until both workers have served detections (each then has a counter file)
                answers += list(ex.map(post, range(8)))
                if len({p.name for p in mp_dir.glob("counter_*.db")}) >= 2:
                    break
        served_by = {p.name for p in mp_dir.glob("counter_*.db")}
        assert len(served_by) == 2, f"requests reached only {served_by}"
        ok = [a for a in answers if a]
        by_input: dict[str, set] = {}
        for a in ok:
            by_input.setdefault(a["filename"], set()).add(a["score"])
        assert len(by_input) == 2 and all(len(s) == 1 for s in by_input.values())  # same file, same score anywhere
        assert by_input["img0.png"] != by_input["img1.png"]
        n_ok = len(ok)
        for _ in range(4):  # every scrape (whichever worker answers) reports the total over both workers
            text = httpx.get(url + "/metrics").text
            assert _counter(text, "fakelite_http_requests_total", endpoint="/v1/detect", code="200") == n_ok
            assert "fakelite_model_ready 1.0" in text
            # the per-stage times (the load test's server-side view) are summed over both workers too: every
            # successful detection passed each stage once, and its detection took some time
            for stage in ("upload", "queue", "detect"):
                assert _counter(text, "fakelite_detect_stage_seconds_count", stage=stage) == n_ok
            assert _counter(text, "fakelite_detect_stage_seconds_sum", stage="detect") > 0
        _check_load_client(url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def _check_load_client(url: str) -> None:
    """benchmarks/load_test.py's light client (pre-encoded multipart bodies over raw keep-alive sockets) against the
    two-worker server: every answer is the expected one (200 with a score, 415 for text, 422 for a truncated JPEG),
    and the server's stage histogram, read the way the load test reads it, counts exactly the answered detections."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import load_test
    finally:
        sys.path.pop(0)
    before = load_test.stage_totals(url, None)
    res = asyncio.run(load_test.run_load(url, 24, 3, 120, 48, None))
    after = load_test.stage_totals(url, None)
    assert res["requests"] == 24 and res["unexpected_errors"] == 0, res["unexpected_examples"]
    assert set(res["by_status"]) <= {"200", "415", "422", "503"} and res["by_status"].get("200", 0) > 0
    view = load_test.stage_view(before, after, res["wall_s"])
    n_ok = res["by_status"]["200"]
    assert view["detect"]["n"] >= n_ok  # the 422s (truncated JPEG) are detections that failed, counted too
    assert view["upload"]["n"] == view["queue"]["n"] == view["detect"]["n"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_port_is_refused_with_one_line_before_the_banner(model_file, workers):
    """Workers listen with SO_REUSEPORT; the start-up check makes sure the port is not already someone else's."""
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        r = subprocess.run([sys.executable, "-m", "fakelite", "serve", "--model", str(model_file), "--port", str(port),
                            "--workers", workers, "--threads", "1", "--log-level", "warning"],
                           env=env, capture_output=True, text=True, timeout=120)
    finally:
        holder.close()
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr
    assert "Ctrl-C stops" not in r.stderr  # refused before announcing the URL


def test_workers_exit_when_the_supervisor_is_killed(model_file):
    """SIGKILL of the parent (OOM killer, a supervisor) must not leave orphaned workers serving the port."""
    import signal
    import socket

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "fakelite", "serve", "--model", str(model_file), "--port", str(port),
                             "--workers", "2", "--threads", "1", "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("server not ready")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 60:  # workers get SIGTERM from the kernel and release the port
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return
            except OSError:
                time.sleep(0.5)
    pytest.fail(f"port {port} still held after the supervisor was killed: orphaned workers")
