"""Scoring policies of large images (center / resize256 / tiles), stored in the artifact and applied by eval, the
Detector (torch and ONNX) and the CLI; old artifacts keep scoring exactly as before."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save
from typer.testing import CliRunner

import fakelite
from fakelite.artifact import META_KEY, header_hash, read
from fakelite.cli import app
from fakelite.data.preprocess import Preprocess
from fakelite.data.transforms import (
    aggregate_logits,
    center_crop,
    eval_crops,
    eval_transform,
    resize_short,
    tile_grid,
    tile_starts,
)
from fakelite.deploy.runtime import Detector
from fakelite.utils.files import atomic_write_bytes

runner = CliRunner()


def _coord_image(h: int, w: int) -> np.ndarray:
    """Pixel (y, x) holds (y mod 256, x mod 256, (y // 256) * 16 + x // 256): every crop names its origin."""
    y, x = np.mgrid[:h, :w]
    return np.stack([y % 256, x % 256, (y // 256) * 16 + x // 256], axis=-1).astype(np.uint8)


def _origin(c: np.ndarray) -> tuple[int, int]:
    hi = int(c[0, 0, 2])
    return int(c[0, 0, 0]) + 256 * (hi // 16), int(c[0, 0, 1]) + 256 * (hi % 16)


def test_tile_positions_are_evenly_spaced_and_cover_the_image():
    pre = Preprocess(crop=64, policy="tiles", max_tiles=16)
    img = _coord_image(200, 130)
    crops = eval_crops(img, pre)
    # full cover: ceil(200/64) x ceil(130/64) = 4 x 3 windows; first at 0, last flush with the edge
    assert tile_grid(200, 130, 64, 16) == (4, 3)
    assert tile_starts(200, 64, 4) == [0, 45, 91, 136] and tile_starts(130, 64, 3) == [0, 33, 66]
    assert [_origin(c) for c in crops] == [(y, x) for y in (0, 45, 91, 136) for x in (0, 33, 66)]
    assert all(c.shape == (64, 64, 3) for c in crops)
    # the cap: 1024² at crop 64 would need 16 x 16; max_tiles=16 keeps an evenly spaced 4 x 4 grid edge to edge
    big = _coord_image(1024, 1024)
    crops = eval_crops(big, pre)
    assert len(crops) == 16
    assert [_origin(c) for c in crops] == [(y, x) for y in (0, 320, 640, 960) for x in (0, 320, 640, 960)]
    wide = eval_crops(_coord_image(64, 1000), Preprocess(crop=64, policy="tiles", max_tiles=5))
    assert [_origin(c) for c in wide] == [(0, x) for x in (0, 234, 468, 702, 936)]


def test_small_images_and_single_crop_policies():
    img = _coord_image(50, 40)
    for policy in ("center", "tiles"):
        (c,) = eval_crops(img, Preprocess(crop=64, policy=policy))
        assert c.shape == (50, 40, 3) and _origin(c) == (0, 0)  # smaller than the crop: scored whole
    one_side = eval_crops(_coord_image(40, 200), Preprocess(crop=64, policy="tiles"))
    assert [(c.shape[:2], _origin(c)) for c in one_side] == [((40, 64), (0, x)) for x in (0, 45, 91, 136)]
    img = _coord_image(300, 500)
    (c,) = eval_crops(img, Preprocess(crop=64))  # center = today's centre crop
    assert np.array_equal(c, center_crop(img, 64)) and _origin(c) == (118, 218)
    rgb = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    (c,) = eval_crops(rgb, Preprocess(crop=224, policy="resize256"))
    assert np.array_equal(c, center_crop(resize_short(rgb, 256), 224)) and c.shape == (224, 224, 3)
    assert torch.equal(eval_transform(rgb, Preprocess(crop=224, policy="resize256")),
                       eval_transform(center_crop(resize_short(rgb, 256), 224), Preprocess(crop=224)))


def test_aggregate_logits_exact():
    z = [0.5, -2.0, 3.0, 1.0]
    assert aggregate_logits(z, Preprocess(aggregate="mean")) == pytest.approx(0.625, abs=0)
    assert aggregate_logits(z, Preprocess(aggregate="max")) == 3.0
    assert aggregate_logits(z, Preprocess(aggregate="topk", topk=2)) == 2.0
    assert aggregate_logits(z, Preprocess(aggregate="topk", topk=9)) == pytest.approx(0.625, abs=0)
    assert aggregate_logits([-1.25], Preprocess(aggregate="max")) == -1.25
    with pytest.raises(ValueError):
        aggregate_logits([], Preprocess())
    with pytest.raises(ValueError, match="scoring policy"):
        Preprocess(policy="mosaic")
    with pytest.raises(ValueError, match="aggregate"):
        Preprocess().with_scoring(aggregate="median")


@pytest.fixture(scope="module")
def tiles_model(tmp_path_factory):
    """A random npr_resnet23 at crop 32 stored with the tiles policy (max aggregation), and its FP32 ONNX."""
    from fakelite.deploy.onnx import export_onnx

    torch.manual_seed(0)
    m = fakelite.create_model("npr_resnet23")
    m.preprocess = m.preprocess.with_scoring(policy="tiles", aggregate="topk", topk=2, max_tiles=6)
    m.preprocess = Preprocess.from_dict({**m.preprocess.to_dict(), "crop": 32})
    d = tmp_path_factory.mktemp("tiles")
    path = fakelite.save(m, d / "t.fakelite", threshold=0.5)
    export_onnx(fakelite.load(path), d / "t.onnx", size=32)
    return path, d / "t.onnx"


def test_policy_round_trips_through_the_artifact_and_onnx(tiles_model):
    path, onnx_path = tiles_model
    m = fakelite.load(path)
    assert (m.preprocess.policy, m.preprocess.aggregate, m.preprocess.topk, m.preprocess.max_tiles) == ("tiles", "topk", 2, 6)
    assert Detector.load(onnx_path).preprocess == m.preprocess  # exported graphs carry it in their metadata


def _as_old_artifact(src, dst):
    """`src` rewritten as an artifact written before scoring policies existed (no policy keys, no temperature)."""
    header, tensors = read(src)
    for k in ("policy", "aggregate", "topk", "max_tiles"):
        header["preprocess"].pop(k)
    header.pop("temperature"), header.pop("threshold_source")
    header.pop("header_hash")
    header["header_hash"] = header_hash(header)
    atomic_write_bytes(dst, st_save(tensors, metadata={META_KEY: json.dumps(header)}))
    return dst


def test_old_artifact_scores_exactly_as_before(tiles_model, tmp_path):
    old = _as_old_artifact(tiles_model[0], tmp_path / "old.fakelite")
    m = fakelite.load(old)
    assert m.preprocess.policy == "center" and m.temperature == 1.0 and m.threshold_source is None
    det = Detector.load(old)
    img = np.random.default_rng(1).integers(0, 256, (90, 70, 3), dtype=np.uint8)
    with torch.inference_mode():
        ref = float(m(eval_transform(img, m.preprocess)[None]).reshape(-1)[0])  # one centre crop, as before
    assert det.predict(img).logit == pytest.approx(ref, abs=1e-6)
    assert det.crops(img).shape == (1, 3, 32, 32)


def test_detector_tiles_torch_vs_onnx(tiles_model):
    dt, do = Detector.load(tiles_model[0]), Detector.load(tiles_model[1])
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 256, s, dtype=np.uint8) for s in ((100, 90, 3), (64, 200, 3), (20, 30, 3))]
    for img in imgs:  # the aggregated logit is topk(2) of the crops' own logits
        crops = dt.crops(img)
        expect = aggregate_logits(dt.logits(crops), dt.preprocess)
        assert dt.predict(img).logit == pytest.approx(expect, abs=1e-9)
    assert [len(dt.crops(i)) for i in imgs] == [6, 6, 1]  # 4x3 capped to 2x3; 2x7 capped to 1x6; small: whole
    pt, po = dt.predict_batch(imgs), do.predict_batch(imgs)
    assert max(abs(a.logit - b.logit) for a, b in zip(pt, po, strict=True)) < 1e-4
    assert np.allclose(dt.predict_arrays(imgs), [p.score for p in pt], atol=1e-12)
    assert np.allclose(do.predict_arrays(imgs), dt.predict_arrays(imgs), atol=1e-5)
    # the CLI-style override: back to one centre crop
    dt.set_scoring(policy="center")
    assert len(dt.crops(imgs[0])) == 1


def test_eval_scores_tiles_like_the_detector(tiles_model, tmp_path):
    from fakelite.eval.evaluate import evaluate

    rng = np.random.default_rng(3)
    from PIL import Image

    paths = []
    for label, sizes in (("0_real", [(80, 70), (40, 100)]), ("1_fake", [(96, 96), (33, 50)])):
        (tmp_path / "set" / label).mkdir(parents=True)
        for i, (h, w) in enumerate(sizes):
            p = tmp_path / "set" / label / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
            paths.append(p)
    m = fakelite.load(tiles_model[0])
    res = evaluate(m, tmp_path / "set", batch_size=3, quiet=True, keep_scores=True)
    labels, scores = res["_scores"]["set"]
    det = Detector.load(tiles_model[0])
    assert np.allclose(np.sort(scores), np.sort(det.predict_arrays([np.asarray(Image.open(p)) for p in paths])),
                       atol=1e-5)
    assert res["policy"] == "tiles" and res["aggregate"] == "topk"
    for k in ("tpr_at_fpr", "fpr_at_threshold", "tpr_at_threshold", "ece"):
        assert k in res["sets"]["set"] and k in res["mean"]


def test_cli_policy_override_and_bad_name(tiles_model, tmp_path, tiny_data):
    j = tmp_path / "e.json"
    r = runner.invoke(app, ["eval", "--model", str(tiles_model[0]), "--data", str(tiny_data / "test"), "--policy",
                            "resize256", "--json", str(j), "--quiet"])
    assert r.exit_code == 0, r.output
    assert json.loads(j.read_text())["policy"] == "resize256"
    r = runner.invoke(app, ["eval", "--model", str(tiles_model[0]), "--data", str(tiny_data / "test"), "--policy",
                            "mosaic", "--quiet"])
    assert r.exit_code == 2 and "unknown scoring policy 'mosaic'" in r.output
    r = runner.invoke(app, ["detect", str(tiny_data / "test" / "gen_a" / "1_fake"), "--model", str(tiles_model[1]),
                            "--faces", "off", "--policy", "center", "--tile-aggregate", "max", "--json",
                            str(tmp_path / "d.json")])
    # a tile option with a one-crop policy would be ignored: refused in one line instead
    assert r.exit_code == 2 and "aggregate applies to the tiles policy only" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    r = runner.invoke(app, ["detect", str(tiny_data / "test" / "gen_a" / "1_fake"), "--model", str(tiles_model[1]),
                            "--faces", "off", "--policy", "tiles", "--tile-aggregate", "topk", "--topk", "2",
                            "--max-tiles", "4", "--json", str(tmp_path / "d.json")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["eval", "--model", str(tiles_model[0]), "--data", str(tiny_data / "test"), "--policy",
                            "center", "--max-tiles", "4", "--quiet"])
    assert r.exit_code == 2 and "max_tiles applies to the tiles policy only" in r.output, r.output
    out = tmp_path / "e.fakelite.onnx"
    r = runner.invoke(app, ["export", "--model", str(tiles_model[0]), "--out", str(out), "--policy", "resize256",
                            "--check", "0"])
    assert r.exit_code == 0, r.output
    assert Detector.load(out).preprocess.policy == "resize256"


def test_train_with_tiles_policy(tiny_data, tmp_path):
    """--policy tiles is stored; validation and the target-FPR threshold score every tile (2x2 at crop 16), while
    BN recomputation takes one crop per image."""
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "--data", str(tiny_data), "--out", str(out), "--epochs", "1", "--batch-size", "8",
                            "--crop", "16", "--policy", "tiles", "--aggregate", "max", "--quiet"])
    assert r.exit_code == 0, r.output
    m = fakelite.load(out / "model.fakelite")
    assert (m.preprocess.policy, m.preprocess.aggregate, m.preprocess.crop) == ("tiles", "max", 16)
    assert m.threshold_source["policy"] == "tiles"
    det = Detector.load(out / "model.fakelite")
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert det.crops(img).shape == (4, 3, 16, 16)


def test_with_scoring_refuses_tile_options_for_one_crop_policies():
    pre = Preprocess(policy="tiles")
    assert pre.with_scoring(aggregate="topk", topk=2, max_tiles=4) == Preprocess(policy="tiles", aggregate="topk",
                                                                                 topk=2, max_tiles=4)
    assert pre.with_scoring(policy="center").policy == "center"
    for kw in ({"aggregate": "max"}, {"topk": 2}, {"max_tiles": 4}):
        with pytest.raises(ValueError, match="applies to the tiles policy only"):
            pre.with_scoring(policy="resize256", **kw)
    with pytest.raises(ValueError, match="unknown scoring policy 'tile'"):  # the name is checked first
        pre.with_scoring(policy="tile", aggregate="max")


def test_tile_options_on_a_centre_crop_model_are_refused(tiny_fp_model, tiny_data):
    """A stored one-crop policy and a tile option without --policy: refused, naming the fix (was ignored)."""
    r = runner.invoke(app, ["eval", "--model", str(tiny_fp_model[1]), "--data", str(tiny_data / "test"),
                            "--aggregate", "max", "--quiet"])
    assert r.exit_code == 2 and "this model scores by 'center'" in r.output and "--policy tiles" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_threshold_small_sample_warning():
    from fakelite.commands.threshold import small_sample_warning

    assert small_sample_warning(1000, 0.05) is None and small_sample_warning(200, 0.05) is None
    assert small_sample_warning(10, 0.0) is None  # --target-fpr 0: nothing may be flagged, nothing to estimate
    assert "use ≥ 334" in small_sample_warning(333, 0.03)  # rounded up: 333 · 3 % is still below 10
    w = small_sample_warning(40, 0.05)  # 2 expected above: Wilson 95 % interval of 5 % on 40 is 1.4–16.5 %
    assert "only 40 real images" in w and "1.4–16.5 %" in w and "≥ 200" in w
