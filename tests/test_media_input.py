"""Issue 13, media input: each failing kind built as a tiny file and run through detect, the service and stream.

1. file names that are not valid UTF-8; 2. an AVI whose header lies about its length; 3. a clip with a corrupt frame
in the middle; 4. EXIF orientation; 5. a symlinked `1_fake` (and a symlink cycle); 6. .jfif/.avif/.heic in a
dataset, with every file not read counted by reason. Plus: the isolated worker (crash, hang), JSON Lines + resume,
video rotation metadata.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mediainputs import (
    avi_clip,
    corrupt_avi_frame,
    exif_portrait,
    face_frame,
    image_bytes,
    patch_avi_counts,
    real_clip,
)
from PIL import Image

from fakelite.data.io import IMAGE_EXTS, load_rgb
from fakelite.deploy.detect import detect_paths
from fakelite.deploy.runtime import Detector

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def det(tiny_fp_model):
    return Detector.load(tiny_fp_model[1])


def _client(det, **kw):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from fakelite.serve.app import create_app
    from fakelite.serve.settings import ServeSettings

    return TestClient(create_app(det, ServeSettings(**kw)), raise_server_exceptions=False)


def _post(c, name: str, data: bytes, **params):
    return c.post("/v1/detect", files={"file": (name, data, "application/octet-stream")}, params=params)


def _cli(*args: str | bytes, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "FAKELITE_QUIET": "1"}
    return subprocess.run([sys.executable, "-m", "fakelite", *args], capture_output=True, env=env, timeout=timeout)


# ---------------------------------------------------------------------------------- 1. non-UTF-8 file names
def test_names_that_are_not_utf8(det, tmp_path, tiny_fp_model):
    folder = tmp_path / "drop"
    folder.mkdir()
    clip = os.fsencode(folder) + b"/clip_caf\xe9.mp4"  # a Latin-1 byte, as in files from old zips and FTP drops
    shutil.copyfile(real_clip("single_face.mp4"), clip)
    img = os.fsencode(folder) + b"/photo_\xe9t\xe9.png"
    with open(img, "wb") as f:
        f.write(image_bytes("PNG", (40, 40)))
    sub = os.fsencode(folder) + b"/d\xe9p\xf4t"  # a folder whose name is not UTF-8 either, holding a broken file
    os.mkdir(sub)
    bad = sub + b"/bad_\xe9.png"
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n garbage")
    out = detect_paths(det, [folder], frames=4, faces="off")
    assert out["skipped"] == 1 and len(out["results"]) == 3, out
    by_bytes = {os.fsencode(r["path"]): r for r in out["results"]}
    assert set(by_bytes) == {clip, img, bad}  # the path round-trips to the bytes on disk
    err = by_bytes[bad]["error"]
    assert "d\\xe9p\\xf4t/bad_\\xe9.png: corrupt or truncated image" in err and "\n" not in err
    err.encode("utf-8")  # printable: the undecodable bytes are shown as \xNN
    v = by_bytes[clip]
    assert v["kind"] == "video" and len(v["frames"]) == 4 and v["frames_total"] == 72 and v["score"] is not None
    assert by_bytes[img]["score"] is not None
    back = json.loads(json.dumps(out))  # plain JSON (surrogates escaped), and the names survive it
    assert {os.fsencode(r["path"]) for r in back["results"]} == {clip, img, bad}

    # a dataset with such names: eval reads them (train and robustness use the same walk and reader)
    import fakelite
    from fakelite.eval.evaluate import evaluate

    ds = os.fsencode(tmp_path) + b"/data_\xe9"
    for label in (b"0_real", b"1_fake"):
        os.makedirs(ds + b"/" + label)
        for i in range(2):
            with open(ds + b"/" + label + b"/img_\xe9%d.png" % i, "wb") as f:
                f.write(image_bytes("PNG", (32, 32), i + len(label)))
    m = evaluate(fakelite.load(tiny_fp_model[1]), os.fsdecode(ds), quiet=True)["mean"]
    assert m["n"] == 4 and m["skipped"] == 0

    from fakelite.deploy.stream import run_stream

    s = run_stream(det, os.fsdecode(clip), display=False, realtime=False, max_frames=5)
    assert s["processed"] == 5 and s.get("error") is None

    # the command line, in a child process: a native crash would show as a negative return code (-11 SIGSEGV)
    j = tmp_path / "d.json"
    r = _cli("detect", os.fsencode(folder), "--model", str(tiny_fp_model[1]), "--json", str(j), "--faces", "off",
             "--frames", "2", "--quiet")
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert len(json.loads(j.read_text())["results"]) == 3
    assert b"clip_caf\\xe9.mp4" in r.stdout  # printed readably, never a UnicodeEncodeError
    r = _cli("stream", "--model", str(tiny_fp_model[1]), "--source", clip, "--no-display", "--max-frames", "3")
    assert r.returncode == 0 and b"3 frames processed" in r.stdout, r.stderr.decode(errors="replace")


# --------------------------------------------------------------------------- 2. a header that lies about length
def test_avi_header_claiming_100000_frames(det, tmp_path):
    p = patch_avi_counts(avi_clip(tmp_path / "lying.avi", n=20), 100_000)
    import cv2

    assert int(cv2.VideoCapture(str(p)).get(cv2.CAP_PROP_FRAME_COUNT)) == 100_000  # the header does claim it
    r = detect_paths(det, [p], frames=8, faces="off")["results"][0]
    assert r["error"] is None and r["frames_total"] == 20 and r["header_frames"] == 100_000
    assert [f["index"] for f in r["frames"]] == [0, 3, 5, 8, 11, 14, 16, 19]  # spread over what the file holds
    assert r["frames_requested"] == r["frames_decoded"] == 8 and r["frames_unreadable"] == 0
    assert r["duration_s"] == pytest.approx(0.8) and r["header_duration_s"] == pytest.approx(4000)
    assert r["truncated"] and "100000 frames claimed, 20 in the file" in r["note"]

    with _client(det) as c:  # the service measures the real length: 0.8 s, far below the 600 s limit
        resp = _post(c, "lying.avi", p.read_bytes(), frames=8, faces="off")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["duration_s"] == pytest.approx(0.8) and body["frames_total"] == 20 and len(body["frames"]) == 8
    # the kind's other side: a header claiming 5 frames for a clip that holds 8 s is refused from its real length,
    # counting no further than the limit
    long = patch_avi_counts(avi_clip(tmp_path / "long.avi", n=200, fps=25), 5)
    with _client(det, max_video_seconds=2.0) as c:
        resp = _post(c, "long.avi", long.read_bytes(), faces="off")
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "video_too_long", resp.text
        resp = _post(c, "lying.avi", p.read_bytes(), faces="off")
        assert resp.status_code == 200, resp.text


# ------------------------------------------------------------------------------ 3. one corrupt frame mid-clip
# the case (20: not one of the 8 frames sampled from 40) and the kind's variants: a sampled frame (6),
# the first (0) and the last (39) frame, two in a row (11, 12)
@pytest.mark.parametrize("bad", [(20,), (6,), (0,), (39,), (11, 12)])
def test_corrupt_frame_in_the_middle(det, tmp_path, bad):
    p = avi_clip(tmp_path / "c.avi", n=40)
    for j, b in enumerate(bad):
        corrupt_avi_frame(p, b, seed=5 + j)
    import cv2

    cap = cv2.VideoCapture(str(p))
    n_cv2 = 0
    while cap.read()[0]:
        n_cv2 += 1
    assert n_cv2 == bad[0]  # OpenCV stops at the bad frame: the input really is what the issue describes
    r = detect_paths(det, [p], frames=8, faces="off")["results"][0]
    assert r["error"] is None and len(r["frames"]) == 8 and r["frames_total"] == 40
    assert r["frames_unreadable"] == len(bad) and not r["truncated"]
    idx = [f["index"] for f in r["frames"]]
    sampled = [0, 6, 11, 17, 22, 28, 33, 39]
    assert not set(bad) & set(idx) and len(set(idx)) == 8
    assert r["frames_substituted"] == len(set(bad) & set(sampled))  # the next (at the end: the last) good frame

    from fakelite.deploy.stream import run_stream

    s = run_stream(det, str(p), display=False, realtime=False)
    assert s["processed"] == 40 - len(bad) and s["frames_unreadable"] == len(bad) and s["error"] is None

    with _client(det) as c:
        body = _post(c, "c.avi", p.read_bytes(), frames=8, faces="off").json()
        assert len(body["frames"]) == 8 and body["frames_unreadable"] == len(bad)


# ------------------------------------------------------------------------------------- 4. EXIF orientation
def _portrait() -> np.ndarray:
    from fakelite.deploy.faces import make_face_detector

    f = face_frame()
    x, _, w, _ = make_face_detector("haar")(f)[0].box
    cx = x + w // 2
    return np.asarray(Image.fromarray(f[:, max(0, cx - 144) : cx + 144]).resize((320, 400), Image.BICUBIC))


def test_exif_orientation(det, tmp_path):
    from fakelite.deploy.faces import make_face_detector

    shown = _portrait()  # 320 wide × 400 high, one face
    p = exif_portrait(tmp_path / "phone.jpg", shown, orientation=6)
    with Image.open(p) as im:
        assert im.size == (400, 320)  # stored sideways
        assert make_face_detector("haar")(np.asarray(im.convert("RGB"))) == []  # no face in the stored pixels
    a = load_rgb(p)
    assert a.shape == (400, 320, 3) and np.abs(a.astype(int) - shown).mean() < 4
    for o in (3, 8):  # the kind: every orientation that turns the picture comes out as displayed
        q = exif_portrait(tmp_path / f"o{o}.jpg", shown, orientation=o)
        assert np.abs(load_rgb(q).astype(int) - shown).mean() < 4
    for fmt, ext in (("PNG", ".png"), ("WEBP", ".webp"), ("HEIF", ".heic"), ("AVIF", ".avif")):  # and every format
        q = exif_portrait(tmp_path / f"o6{ext}", shown[::4, ::4].copy(), orientation=6, fmt=fmt)
        assert load_rgb(q).shape == (100, 80, 3), ext

    r = detect_paths(det, [p], faces="auto")["results"][0]
    assert r["input"] == "faces" and (r["width"], r["height"]) == (320, 400)
    x, y, w, h = r["faces"][0]["box"]
    assert x + w <= 320 and y + h <= 400 and w > 100

    with _client(det) as c:
        body = _post(c, "phone.jpg", p.read_bytes()).json()
        assert (body["width"], body["height"]) == (320, 400) and body["input"] == "faces", body
        assert body["faces"] and body["faces"][0]["box"][0] + body["faces"][0]["box"][2] <= 320

    # training/eval/robustness read through load_rgb too: the dataset yields the upright picture
    from fakelite.data.dataset import ImageDataset
    from fakelite.data.preprocess import Preprocess

    ds = ImageDataset([(p, 0)], Preprocess(crop=32, npr=False))
    assert ds.load(0).shape == (400, 320, 3)


# ----------------------------------------------------------------------------- 5. a symlinked 1_fake folder
def _pngs(d: Path, n: int, seed: int) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (d / f"{seed}_{i}.png").write_bytes(image_bytes("PNG", (32, 32), seed * 100 + i))


def test_symlinked_fake_folder_and_cycles(det, tmp_path, tiny_fp_model):
    import fakelite
    from fakelite.data.folders import discover_sets
    from fakelite.eval.evaluate import evaluate

    root = tmp_path / "data"
    _pngs(root / "set" / "0_real", 4, 1)
    _pngs(tmp_path / "elsewhere" / "fakes", 4, 2)
    os.symlink(tmp_path / "elsewhere" / "fakes", root / "set" / "1_fake")
    os.symlink(root, root / "set" / "0_real" / "loop")  # a cycle back to the root
    os.symlink(root / "set" / "1_fake", tmp_path / "elsewhere" / "fakes" / "self")  # a cycle through the link

    sets = discover_sets(root)
    assert [(s.name, s.n_real, s.n_fake) for s in sets] == [("set", 4, 4)]
    res = evaluate(fakelite.load(tiny_fp_model[1]), root, quiet=True)
    m = res["sets"]["set"]
    assert m["n"] == 8 and m["ap"] is not None and m["auc"] is not None
    out = detect_paths(det, [root], faces="off")
    assert len(out["results"]) == 8 and out["skipped"] == 0 and out["symlink_loops"] >= 1
    assert len({r["path"] for r in out["results"]}) == 8

    # the kind's variants: symlinked set folders, a cycle at the level of sets, and an indirect cycle (a ↔ b)
    multi = tmp_path / "multi"
    (multi / "test").mkdir(parents=True)
    os.symlink(root / "set", multi / "test" / "gen_a")
    _pngs(tmp_path / "b_set" / "0_real", 2, 4)
    _pngs(tmp_path / "b_set" / "1_fake", 2, 5)
    os.symlink(tmp_path / "b_set", multi / "test" / "gen_b")
    os.symlink(multi, multi / "test" / "up")  # back to the root, beside the sets
    (tmp_path / "x" / "a").mkdir(parents=True)
    (tmp_path / "x" / "b").mkdir(parents=True)
    os.symlink(tmp_path / "x" / "b", tmp_path / "x" / "a" / "to_b")
    os.symlink(tmp_path / "x" / "a", tmp_path / "x" / "b" / "to_a")
    os.symlink(tmp_path / "x" / "a", multi / "test" / "maze")
    sets = discover_sets(multi / "test")
    assert sorted((s.name, s.n_real, s.n_fake) for s in sets) == [("gen_a", 4, 4), ("gen_b", 2, 2)]
    out = detect_paths(det, [multi], faces="off")
    assert len(out["results"]) == 12 and out["skipped"] == 0


# ------------------------------------------------------------------ 6. modern image types + counts by reason
def test_jfif_avif_heic_in_a_dataset(det, tmp_path, tiny_fp_model):
    import fakelite
    from fakelite.eval.evaluate import evaluate
    from fakelite.eval.report import eval_table

    assert {".jfif", ".avif", ".heic", ".webp"} <= IMAGE_EXTS
    root = tmp_path / "data"
    kinds = [("PNG", ".png"), ("PNG", ".png"), ("JPEG", ".jfif"), ("AVIF", ".avif"), ("HEIF", ".heic")]
    for label, seed in (("0_real", 0), ("1_fake", 10)):
        d = root / label
        d.mkdir(parents=True)
        for i, (fmt, ext) in enumerate(kinds):
            (d / f"{i}{ext}").write_bytes(image_bytes(fmt, (40, 48), seed + i))
    (root / "0_real" / "notes.txt").write_text("not media")
    (root / "0_real" / "scan.pdf").write_bytes(b"%PDF-1.4\n")
    (root / "1_fake" / "._0.png").write_bytes(b"\0\5\26\7AppleDouble")
    (root / "1_fake" / "text.png").write_text("a text file named like an image")
    res = evaluate(fakelite.load(tiny_fp_model[1]), root, quiet=True)
    m = next(iter(res["sets"].values()))
    assert m["n"] == 10 and m["skipped"] == 1
    assert m["not_read"] == {"unsupported type": 2, "hidden": 1, "not an image": 1}
    from rich.console import Console

    con = Console(width=200, record=True)
    con.print(eval_table(res))
    text = con.export_text()
    assert "2 unsupported type" in text and "1 not an image" in text

    out = detect_paths(det, [root], faces="off")
    scored = [r for r in out["results"] if r["score"] is not None]
    assert len(scored) == 10 and out["skipped"] == 1
    assert out["not_read"] == {"unsupported type": 2, "hidden": 1, "not an image": 1}
    assert out["files"] == 14  # every file accounted for: 11 results + 3 left out by the walk

    with _client(det) as c:  # the service takes HEIC and AVIF uploads (named anything: content decides)
        for name in ("4.heic", "3.avif", "2.jfif"):
            body = _post(c, "upload.bin", (root / "0_real" / name).read_bytes(), faces="off").json()
            assert body.get("kind") == "image" and body["score"] is not None and body["width"] == 40, (name, body)


# ------------------------------------------------------------------- isolation: a crash or hang costs one file
def test_native_crash_and_hang_cost_one_file(det, tmp_path, monkeypatch):
    from fakelite.deploy import isolated

    d = tmp_path / "batch"
    d.mkdir()
    for name in ("a.png", "b_XCRASHX.png", "c_XHANGX.png", "d.png"):
        (d / name).write_bytes(image_bytes("PNG", (32, 32)))
    shutil.copyfile(avi_clip(tmp_path / "e_XCRASHX.avi", n=10), d / "e_XCRASHX.avi")
    isolated.POOL.close()  # workers read the fault switch from their environment at start
    monkeypatch.setenv(isolated.FAULT_ENV, "segv:XCRASHX,hang:XHANGX")
    try:
        t0 = time.perf_counter()
        out = detect_paths(det, [d], faces="off", timeout=3.0, frames=4)
        wall = time.perf_counter() - t0
        with _client(det, request_timeout_s=5.0) as c:
            resp = _post(c, "clip.avi", (d / "e_XCRASHX.avi").read_bytes(), faces="off")
    finally:
        isolated.POOL.close()
    by = {Path(r["path"]).name: r for r in out["results"]}
    assert by["a.png"]["score"] is not None and by["d.png"]["score"] is not None
    assert "decoder crashed (signal SIGSEGV)" in by["b_XCRASHX.png"]["error"]
    assert "decoder crashed (signal SIGSEGV)" in by["e_XCRASHX.avi"]["error"]
    assert "took longer than 3 s" in by["c_XHANGX.png"]["error"]
    assert out["skipped"] == 3 and wall < 30
    # the service's upload is a temp file whose name the client does not choose: the fault is not aimed at it
    assert resp.status_code == 200, resp.text


# ---------------------------------------------------------------------------------- JSON Lines and --resume
def test_jsonl_as_it_goes_and_resume(det, tmp_path, tiny_fp_model):
    d = tmp_path / "imgs"
    _pngs(d, 4, 3)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    log = tmp_path / "run.jsonl"
    full = detect_paths(det, [d], faces="off", jsonl=log)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["path"] for r in lines] == [r["path"] for r in full["results"]] and len(lines) == 5
    # a run killed while writing its third line: two complete lines and half a line
    text = log.read_text().splitlines(keepends=True)
    log.write_text("".join(text[:2]) + text[2][:17])
    again = detect_paths(det, [d], faces="off", jsonl=log, resume=True)
    assert again["resumed"] == 2 and len(again["results"]) == 5
    assert [r["score"] for r in again["results"]] == [r["score"] for r in full["results"]]
    assert len([json.loads(x) for x in log.read_text().splitlines()]) == 5

    import typer
    from typer.testing import CliRunner

    from fakelite.commands.deploy import detect_command

    app = typer.Typer()
    app.command()(detect_command)
    j = tmp_path / "out" / "d.json"
    args = [str(d), "--model", str(tiny_fp_model[1]), "--json", str(j), "--faces", "off", "--quiet"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert len(j.with_suffix(".jsonl").read_text().splitlines()) == 5
    r = CliRunner().invoke(app, args + ["--resume"])
    assert r.exit_code == 0 and "resumed: 5 result(s)" in r.output, r.output
    err = r.output + (r.stderr if r.stderr_bytes is not None else "")
    assert "not read: 1 unreadable" in err  # a PNG cut short: corrupt, so "unreadable"


# -------------------------------------------------------------------------------- video rotation metadata
def test_video_rotation_metadata_is_honoured(det, tmp_path):
    import av
    import cv2

    p = tmp_path / "phone.mp4"
    c = av.open(str(p), "w")
    s = c.add_stream("mpeg4", rate=10)
    s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
    s.set_display_rotation(90)
    img = np.zeros((32, 64, 3), np.uint8)
    img[:8, :8] = 255  # a white corner, top-left as stored
    for _ in range(5):
        for pk in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(pk)
    for pk in s.encode():
        c.mux(pk)
    c.close()
    r = detect_paths(det, [p], frames=2, faces="off")["results"][0]
    assert r["error"] is None and (r["width"], r["height"]) == (32, 64) and r["rotation"] == 90
    from fakelite.data.video_reader import read_video

    _, _, ours = next(iter(read_video(p, 1)))
    ok, theirs = cv2.VideoCapture(str(p)).read()  # OpenCV applies the display matrix too
    assert ok and ours.shape == theirs.shape == (64, 32, 3)
    assert np.abs(ours.astype(int) - theirs[..., ::-1].astype(int)).mean() < 8


def test_killed_detect_loses_nothing_finished(tmp_path, tiny_fp_model):
    """SIGKILL `fakelite detect` while it is stuck on a file (an injected decoder hang), then --resume."""
    import signal

    from fakelite.deploy.isolated import FAULT_ENV

    d = tmp_path / "imgs"
    _pngs(d, 2, 7)
    (d / "c_XHANGX.png").write_bytes(image_bytes("PNG", (32, 32), 3))
    (d / "d.png").write_bytes(image_bytes("PNG", (32, 32), 4))
    j = tmp_path / "run.json"
    args = [sys.executable, "-m", "fakelite", "detect", str(d), "--model", str(tiny_fp_model[1]), "--json", str(j),
            "--faces", "off", "--quiet", "--timeout", "120"]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), FAULT_ENV: "hang:XHANGX"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    log = j.with_suffix(".jsonl")
    try:
        t0 = time.time()
        while time.time() - t0 < 120 and not (log.exists() and len(log.read_text().splitlines()) >= 2):
            time.sleep(0.2)
        time.sleep(0.5)  # now inside the hang on the third file
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its decode worker
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done = [json.loads(x)["path"] for x in log.read_text().splitlines()]
    assert [Path(p).name for p in done] == ["7_0.png", "7_1.png"] and not j.exists()
    env.pop(FAULT_ENV)
    r = subprocess.run(args + ["--resume"], env=env, capture_output=True, timeout=240)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out = json.loads(j.read_text())
    assert out["resumed"] == 2 and len(out["results"]) == 4 and out["skipped"] == 0
    assert len(log.read_text().splitlines()) == 4
