"""The bad-input corpus fed to `detect` (API and command) and to the HTTP server.

detect: every file gets a result; bad ones carry a one-line error naming the file; `skipped` counts them; the
odd-but-valid images are scored. Server: a bad upload is a 4xx JSON error with a clear message, never a 500.
"""

from __future__ import annotations

import json

import pytest
from badinputs import make_corpus, odd_but_valid_images, restore_permissions


@pytest.fixture
def corpus(tmp_path):
    c = make_corpus(tmp_path / "bad")
    yield c
    restore_permissions(c)


def _expected_bad(corpus) -> set[str]:
    return {str(f.path) for f in corpus.values() if f.bad}


def test_detect_api_reports_each_bad_file(corpus, tiny_fp_model, tiny_data):
    from fakelite.deploy.detect import detect_paths
    from fakelite.deploy.runtime import Detector

    det = Detector.load(tiny_fp_model[1])
    good = sorted((tiny_data / "test" / "gen_a" / "0_real").iterdir())[0]
    out = detect_paths(det, [corpus["zero_bytes.png"].path.parent, good], faces="off")
    by_path = {r["path"]: r for r in out["results"]}
    errors = {p for p, r in by_path.items() if r["error"]}
    assert errors == _expected_bad(corpus)
    assert out["skipped"] == len(errors)
    for p in errors:
        msg = by_path[p]["error"]
        assert "\n" not in msg and p in msg and by_path[p]["score"] is None
    for f in odd_but_valid_images(corpus):
        assert by_path[str(f.path)]["score"] is not None, f.note
    assert by_path[str(good)]["score"] is not None
    json.dumps(out)  # the result is plain JSON


def test_detect_command_keeps_going(corpus, tiny_fp_model, tmp_path):
    import typer
    from typer.testing import CliRunner

    from fakelite.commands.deploy import detect_command

    app = typer.Typer()
    app.command()(detect_command)
    j = tmp_path / "d.json"
    r = CliRunner().invoke(app, [str(corpus["zero_bytes.png"].path.parent), "--model", str(tiny_fp_model[1]),
                                 "--json", str(j), "--faces", "off", "--quiet"])
    assert "Traceback" not in r.output, r.output
    assert r.exit_code in (0, 1), r.output
    out = json.loads(j.read_text())
    assert out["skipped"] == len(_expected_bad(corpus))


def test_server_bad_uploads_are_4xx(corpus, tiny_fp_model):
    import time

    from fastapi.testclient import TestClient

    from fakelite.serve.app import create_app

    with TestClient(create_app(tiny_fp_model[1])) as client:
        deadline = time.time() + 60
        while client.get("/readyz").status_code != 200 and time.time() < deadline:
            time.sleep(0.1)
        for name, f in corpus.items():
            if name in ("broken_link.png", "unreadable.png"):
                continue  # not uploadable content: the client could not read them either
            data = f.path.read_bytes()
            r = client.post("/v1/detect?faces=off", files={"file": (name, data, "application/octet-stream")})
            if f.bad:
                assert 400 <= r.status_code < 500, (name, r.status_code, r.text[:300])
                err = r.json()["error"]
                assert err["code"] and err["message"] and "\n" not in err["message"], (name, err)
            else:
                assert r.status_code == 200, (name, r.status_code, r.text[:300])
                assert 0.0 <= r.json()["score"] <= 1.0

