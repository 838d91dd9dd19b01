"""WildSynth: generator families at native resolution, the shared post-processing chain, the shortcut probe,
and a deterministic quick build."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakelite.data.synth.generators import psnr
from fakelite.data.synth.source import default_cache_dir, fetch_celeba_wheel
from fakelite.data.wild.build import (
    FAMILIES,
    HELDOUT_FAMILIES,
    TRAIN_FAMILIES,
    build_wildsynth,
    celeba_face_mask,
)
from fakelite.data.wild.generators import (
    QUICK_TRAIN,
    WEIGHTS_DIR,
    apply_generator,
    load_generator,
    train_family,
)
from fakelite.data.wild.generators import SHIPPED_FAMILIES as GEN_FAMILIES
from fakelite.data.wild.postprocess import (
    ChainConfig,
    h264_roundtrip,
    jpeg_quality_estimate,
    metadata_features,
    postprocess,
    shortcut_probe,
)


def _face() -> np.ndarray:
    import zipfile

    from fakelite.data.synth.source import IMAGE_DIR
    from fakelite.data.wild.sources import decode_photo

    with zipfile.ZipFile(fetch_celeba_wheel(default_cache_dir())) as zf:
        return decode_photo(zf.read(f"{IMAGE_DIR}000901.jpg"), "000901.jpg")


@pytest.mark.parametrize("family", GEN_FAMILIES)
def test_shipped_generators_rebuild_a_face_at_native_size(family: str) -> None:
    model = load_generator(WEIGHTS_DIR / f"{family}.safetensors", family)
    assert model is not None, f"{family}: shipped weights missing or of another GENERATOR_VERSION"
    face = _face()  # 218×178, not a multiple of 8: padding must be cropped back
    out = apply_generator(model, family, face, seed=1)
    assert out.shape == face.shape and out.dtype == np.uint8
    # trained decoders reproduce the content (a random network gives ~10 dB, a collapsed one ~3 dB; the ×8 latent
    # AE, the lossiest, gives ~21 dB on this face); yet the fake is not the real
    assert 18.0 < psnr(out, face) < 60.0


def test_generator_output_is_seeded_and_fully_convolutional() -> None:
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8) for _ in range(3)]
    m = train_family("gan", imgs, QUICK_TRAIN)
    a = apply_generator(m, "gan", imgs[0], seed=3)
    assert np.array_equal(a, apply_generator(m, "gan", imgs[0], seed=3))
    big = rng.integers(0, 256, (1100, 90, 3), dtype=np.uint8)  # more than one tile high
    assert apply_generator(m, "gan", big).shape == big.shape


def test_h264_roundtrip_keeps_odd_sizes_and_changes_pixels() -> None:
    img = np.random.default_rng(1).integers(0, 256, (37, 51, 3), dtype=np.uint8)
    out = h264_roundtrip(img, 30)
    assert out.shape == img.shape and not np.array_equal(out, img)


@pytest.mark.parametrize("q", [60, 75, 95])
def test_jpeg_quality_estimate_recovers_the_saved_quality(tmp_path: Path, q: int) -> None:
    p = tmp_path / "a.jpg"
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(p, quality=q)
    with Image.open(p) as im:
        assert jpeg_quality_estimate(np.asarray(im.quantization[0])) == q
    f = metadata_features(p)
    assert f[0] == 1.0 and f[1] == 16 and f[7] == q


def _write(root: Path, imgs: list[np.ndarray], fmt: str) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i, img in enumerate(imgs):
        p = root / f"{i}.{fmt}"
        Image.fromarray(img).save(p, quality=90) if fmt == "jpg" else Image.fromarray(img).save(p)
        out.append(p)
    return out


def test_shortcut_probe_catches_a_format_shortcut_and_passes_the_shared_chain(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (int(rng.integers(64, 97)), int(rng.integers(64, 97)), 3), dtype=np.uint8)
            for _ in range(160)]
    # a builder that saves reals as PNG and fakes as JPEG: the probe must see it
    bad = shortcut_probe(_write(tmp_path / "r", imgs[:80], "png"), _write(tmp_path / "f", imgs[80:], "jpg"))
    assert bad["auc"] > 0.95
    # both classes through the same chain: metadata carries no class
    paths: dict[str, list[Path]] = {"r": [], "f": []}
    for cls, chunk in (("r", imgs[:80]), ("f", imgs[80:])):
        (tmp_path / f"chain_{cls}").mkdir()
        for i, img in enumerate(chunk):
            data, ext, _ = postprocess(img, rng, ChainConfig(video_prob=0.0))
            p = tmp_path / f"chain_{cls}" / f"{i}{ext}"
            p.write_bytes(data)
            paths[cls].append(p)
    good = shortcut_probe(paths["r"], paths["f"])
    assert good["auc"] < 0.65  # 80 vs 80 samples: chance level ± noise


def test_celeba_face_mask_peaks_on_the_face() -> None:
    m = celeba_face_mask(218, 178)
    assert m.shape == (218, 178)
    assert m[120, 89] == pytest.approx(1.0) and m[0, 0] == 0.0 and m[217, 177] == 0.0


@pytest.fixture(scope="module")
def quick_builds(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("wild")
    cache = base / "cache"
    cache.mkdir()
    src = default_cache_dir()
    for p in [fetch_celeba_wheel(src), *src.glob("scikit_image-*.whl")]:
        shutil.copy2(p, cache / p.name)
    if (src / "debs").exists():
        shutil.copytree(src / "debs", cache / "debs")
    a = build_wildsynth(base / "a", quick=True, cache_dir=cache, progress=False)
    b = build_wildsynth(base / "b", quick=True, cache_dir=cache, progress=False)
    c = build_wildsynth(base / "c", quick=True, cache_dir=cache, progress=False, splits=("test",), test_units=3)
    return {"base": base, "a": a, "b": b, "c": c}


def test_quick_build_layout_and_summary(quick_builds: dict) -> None:
    root, s = quick_builds["base"] / "a", quick_builds["a"]
    assert sorted(p.name for p in (root / "test").iterdir()) == sorted(FAMILIES)
    assert set(TRAIN_FAMILIES).isdisjoint(HELDOUT_FAMILIES)
    n_real = len(list((root / "train" / "0_real").iterdir()))
    assert n_real == len(list((root / "train" / "1_fake").iterdir())) == 2 * s["units"]["train"]
    for fam in FAMILIES:
        reals = sorted(p.stem for p in (root / "test" / fam / "0_real").iterdir())
        assert reals == sorted(p.stem for p in (root / "test" / fam / "1_fake").iterdir())
    fakes = [p.stem for p in (root / "train" / "1_fake").iterdir()]
    assert {f.rsplit("_", 1)[-1] for f in fakes} <= set(TRAIN_FAMILIES)  # only seen families in training
    assert s["sources"]["celeba"].startswith("ok")
    assert {"auc", "passed", "bytes_per_pixel_auc"} <= set(s["shortcut_probe"])
    # both classes see both formats
    exts = {cls: {p.suffix for p in (root / "train" / cls).iterdir()} for cls in ("0_real", "1_fake")}
    assert exts["0_real"] == exts["1_fake"] == {".jpg", ".png"}


def test_quick_build_is_byte_identical(quick_builds: dict) -> None:
    a, b = quick_builds["base"] / "a", quick_builds["base"] / "b"
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "summary.json")
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != "summary.json")
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_test_only_sample_build_writes_the_full_builds_files(quick_builds: dict) -> None:
    """The demo's build (test split only, a sample of units) gives byte for byte the files a full build gives."""
    a, c = quick_builds["base"] / "a", quick_builds["base"] / "c"
    assert sorted(p.name for p in c.iterdir() if p.is_dir()) == ["test"]
    assert quick_builds["c"]["units"] == {"test": 3} and "shortcut_probe" not in quick_builds["c"]
    files = sorted(p.relative_to(c) for p in c.rglob("*") if p.is_file() and p.name != "summary.json")
    assert len({f.stem for f in files}) == 3
    for fam in FAMILIES:
        if fam != "faceswap":
            assert len(list((c / "test" / fam / "1_fake").iterdir())) == 3
    for f in files:
        assert (c / f).read_bytes() == (a / f).read_bytes(), f
    with pytest.raises(ValueError, match="splits must be among"):
        build_wildsynth(c, splits=("testing",))
    for bad in ({"test_units": 0}, {"test_units": -1}, {"splits": ("train",), "test_units": 2}):
        with pytest.raises(ValueError, match="--test-units must be >= 1 and needs the test split"):
            build_wildsynth(c, **bad)


def test_real_photos_keep_native_resolution(quick_builds: dict) -> None:
    root = quick_builds["base"] / "a"
    sizes = []
    for p in (root / "test" / "lae4" / "0_real").iterdir():
        with Image.open(io.BytesIO(p.read_bytes())) as im:
            sizes.append(max(im.size))
    assert max(sizes) > 200  # whole photographs, not thumbnails (resized by the chain at most ×0.5)
