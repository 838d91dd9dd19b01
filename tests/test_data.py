"""Data: layout discovery for the field's conventions, robust decoding, transforms."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakelite.data.folders import discover_sets, labelled_images
from fakelite.data.io import BadInput, decode_image, load_rgb
from fakelite.data.preprocess import Preprocess
from fakelite.data.transforms import AugmentConfig, augment, center_crop, eval_transform, random_crop


def _img(p: Path, size=(8, 8), mode="RGB"):
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(p)


def _set(d: Path, n=1):
    for lab in ("0_real", "1_fake"):
        for i in range(n):
            _img(d / lab / f"{i}.png")


def test_flat_set(tmp_path):
    _set(tmp_path, 2)
    sets = discover_sets(tmp_path)
    assert len(sets) == 1 and sets[0].n_real == 2 and sets[0].n_fake == 2


def test_forensynths_test_root(tmp_path):
    # progan with per-class subfolders (merged), deepfake flat, cyclegan with classes
    for c in ("airplane", "cat"):
        _set(tmp_path / "progan" / c)
    _set(tmp_path / "deepfake")
    for c in ("apple", "horse"):
        _set(tmp_path / "cyclegan" / c)
    names = {s.name: len(s.items) for s in discover_sets(tmp_path)}
    assert names == {"progan": 4, "deepfake": 2, "cyclegan": 4}


def test_generator_root_is_many_sets(tmp_path):
    # FaceSynth / UniversalFakeDetect: test/<generator>/{0_real,1_fake} → one set per generator
    for g in ("dalle", "glide_100_10", "ldm_200"):
        _set(tmp_path / g)
    assert [s.name for s in discover_sets(tmp_path)] == ["dalle", "glide_100_10", "ldm_200"]


def test_root_with_class_subfolders_is_one_set(tmp_path):
    root = tmp_path / "progan"
    for c in ("airplane", "bicycle", "bird"):
        _set(root / c)
    sets = discover_sets(root)
    assert len(sets) == 1 and sets[0].name == "progan" and len(sets[0].items) == 6


def test_nested_sets_named_by_relative_path(tmp_path):
    # below the root, a folder whose set-holding children are all leaf sets is one grouped set
    _set(tmp_path / "gans" / "a")
    _set(tmp_path / "gans" / "b" / "x" / "y")
    _set(tmp_path / "diffusion" / "c")
    sets = {s.name: len(s.items) for s in discover_sets(tmp_path)}
    assert sets == {"diffusion": 2, "gans/a": 2, "gans/b/x": 2}


def test_training_split_labels(tmp_path):
    for c in ("car", "cat"):
        _set(tmp_path / "train" / c, 2)
    items = labelled_images(tmp_path / "train")
    assert len(items) == 8 and sorted({y for _, y in items}) == [0, 1]


def test_no_sets_is_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no 0_real/1_fake"):
        discover_sets(tmp_path)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA", "1"])
def test_modes_become_rgb(tmp_path, mode):
    p = tmp_path / f"x.{'jpg' if mode == 'CMYK' else 'png'}"
    img = Image.new(mode, (6, 5))
    if mode == "P":
        img.info["transparency"] = 0
    img.save(p)
    a = load_rgb(p)
    assert a.shape == (5, 6, 3) and a.dtype == np.uint8


def test_16bit_is_scaled():
    img = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    assert decode_image(buf.getvalue()).max() == 255


@pytest.mark.parametrize("data,msg", [(b"", "empty"), (b"hello world", "not an image"),
                                      (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "corrupt|not an image")])
def test_bad_bytes_raise_badinput(data, msg):
    with pytest.raises(BadInput, match=msg):
        decode_image(data, "f.png")


def test_truncated_png_names_file(tmp_path):
    p = tmp_path / "t.png"
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    p.write_bytes(buf.getvalue()[:300])
    with pytest.raises(BadInput) as e:
        load_rgb(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_crops():
    img = np.zeros((70, 50, 3), np.uint8)
    assert center_crop(img, 32).shape == (32, 32, 3)
    assert center_crop(img, 64).shape == (64, 50, 3)  # never up-sampled
    assert random_crop(img, 64, np.random.default_rng(0)).shape == (64, 64, 3)  # padded
    t = eval_transform(np.zeros((33, 35, 3), np.uint8), Preprocess(crop=224))
    assert t.shape == (3, 32, 34)  # trimmed to even


def test_augment_deterministic_and_off_by_default():
    img = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    assert not AugmentConfig().active
    cfg = AugmentConfig(hflip=0.5, blur_prob=0.5, jpeg_prob=0.5)
    a = augment(img, cfg, np.random.default_rng([1, 2, 3]))
    b = augment(img, cfg, np.random.default_rng([1, 2, 3]))
    assert np.array_equal(a, b)
