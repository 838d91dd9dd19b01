"""`fakelite serve` ends at start-up, non-zero with one line, when its model cannot load; the API never
contradicts itself about a failed load."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from fakelite.serve.app import create_app  # noqa: E402
from fakelite.serve.settings import ServeSettings  # noqa: E402

SRC = str(Path(__file__).resolve().parent.parent / "src")


def _serve(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "fakelite", "serve", "--port", "8797", *args], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("case", ["corrupt", "bogus-backend"])
def test_serve_exits_when_the_model_cannot_load(tiny_fp_model, tmp_path, case):
    _, good = tiny_fp_model
    if case == "corrupt":
        bad = tmp_path / "model.fakelite"
        bad.write_bytes(good.read_bytes()[:200])
        r = _serve("--model", str(bad))
    else:
        r = _serve("--model", str(good), "--backend", "bogus")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert ("model.fakelite" in lines[0]) if case == "corrupt" else ("bogus" in lines[0] and "onnxruntime" in lines[0])


def test_v1_model_reports_a_failed_load_like_readyz(tmp_path):
    bad = tmp_path / "broken.fakelite"
    bad.write_bytes(b"not a model")
    with TestClient(create_app(bad, ServeSettings(threads=1))) as c:
        for _ in range(200):
            r = c.get("/readyz")
            if r.json()["error"]["code"] == "model_failed":
                break
            time.sleep(0.05)
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_failed"
        m = c.get("/v1/model")
        assert m.status_code == 503 and m.json()["error"]["code"] == "model_failed"
