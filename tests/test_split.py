"""`fakelite data split`: stratified, deterministic, and frames of one source never straddle splits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakelite.data.split import collect, group_key, parse_ratios, split_folder


@pytest.mark.parametrize("stem,key", [
    ("clip07_0001", "clip07"), ("clip07-frame12", "clip07"), ("clip07_0003_face0", "clip07"),
    ("id3_f12_face1", "id3"), ("Video.Frame5", "video"), ("000123", "000123"), ("clip07", "clip07"),
    ("a_b_crop2", "a_b"),
])
def test_group_key(stem, key):
    assert group_key(stem) == key


def _make_src(root: Path, real_dirs=("0_real", "1_fake")) -> Path:
    """40 real and 40 fake sources with 1–5 frames each (names like src12_0003.png / src12-frame3_face0.png)."""
    rng = np.random.default_rng(0)
    tiny = np.zeros((4, 4, 3), np.uint8)
    for cls, prefix in zip(real_dirs, ("vid", "fakevid"), strict=True):
        d = root / cls
        d.mkdir(parents=True)
        for s in range(40):
            for f in range(int(rng.integers(1, 6))):
                name = f"{prefix}{s:02d}_{f:04d}.png" if f % 2 else f"{prefix}{s:02d}-frame{f}_face0.png"
                Image.fromarray(tiny).save(d / name)
    return root


def _files(out: Path) -> dict[str, set[str]]:
    return {s: {p.relative_to(out / s).as_posix() for p in (out / s).rglob("*.png")} for s in ("train", "val", "test")}


def test_split_no_leakage_stratified_deterministic(tmp_path):
    src = _make_src(tmp_path / "src")
    n_real, n_fake = len(list((src / "0_real").iterdir())), len(list((src / "1_fake").iterdir()))
    s1 = split_folder(src, tmp_path / "a", (0.7, 0.15, 0.15), seed=3)
    s2 = split_folder(src, tmp_path / "b", (0.7, 0.15, 0.15), seed=3, link=True)
    s3 = split_folder(src, tmp_path / "c", (0.7, 0.15, 0.15), seed=4)
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert fa == fb  # deterministic (and --link gives the same split)
    assert fa != fc  # the seed matters
    # every file exactly once
    all_files = [f for s in fa.values() for f in s]
    assert len(all_files) == len(set(all_files)) == n_real + n_fake
    # no source group in two splits
    where: dict[str, str] = {}
    for s, files in fa.items():
        for f in files:
            g = group_key(Path(f).stem)
            assert where.setdefault(g, s) == s, f"{g} in {where[g]} and {s}"
    # stratified: each split near 70/15/15 of each class, both classes present everywhere
    for s, frac in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        r, f = s1["splits"][s]["real"], s1["splits"][s]["fake"]
        assert r > 0 and f > 0
        assert abs(r / n_real - frac) < 0.06 and abs(f / n_fake - frac) < 0.06, (s, r, f)
    # hard links share the inode
    some = next(iter(fb["train"]))
    assert os.stat(tmp_path / "b" / "train" / some).st_nlink >= 2
    meta = json.loads((tmp_path / "a" / "split.json").read_text())
    assert meta["grouped"] and meta["groups"] == 80 and s2["link"] and s3["seed"] == 4


def test_split_real_fake_names_and_subfolders(tmp_path):
    src = tmp_path / "src"
    tiny = np.zeros((4, 4, 3), np.uint8)
    for cls in ("real", "fake"):
        for v in range(10):
            d = src / cls / f"video{v}"
            d.mkdir(parents=True)
            for f in range(3):
                Image.fromarray(tiny).save(d / f"{f:04d}.png")
    items = collect(src)
    assert {it.group for it in items} == {f"video{v}" for v in range(10)}
    split_folder(src, tmp_path / "out", parse_ratios("60/20/20"))
    fa = _files(tmp_path / "out")
    assert all(f.split("/")[0] in ("0_real", "1_fake") for s in fa.values() for f in s)
    vids = {s: {f.split("/")[1] for f in files} for s, files in fa.items()}
    assert not (vids["train"] & vids["val"]) and not (vids["train"] & vids["test"]) and not (vids["val"] & vids["test"])


def test_split_errors(tmp_path):
    with pytest.raises(ValueError):
        parse_ratios("70/30")
    with pytest.raises(FileNotFoundError):
        split_folder(tmp_path / "nope", tmp_path / "o")
    src = tmp_path / "one"
    (src / "0_real").mkdir(parents=True)
    (src / "1_fake").mkdir(parents=True)
    tiny = np.zeros((4, 4, 3), np.uint8)
    for i in range(6):  # all frames of a single source: cannot be split without leakage
        Image.fromarray(tiny).save(src / ("0_real" if i % 2 else "1_fake") / f"clip_{i:04d}.png")
    with pytest.raises(ValueError, match="no-group"):
        split_folder(src, tmp_path / "o2")
    s = split_folder(src, tmp_path / "o3", group=False, ratios=(0.5, 0.25, 0.25))
    assert s["groups"] == 6


def test_split_cli(tmp_path):
    import typer
    from typer.testing import CliRunner

    from fakelite.commands.compress import split_command

    app = typer.Typer()
    app.command()(split_command)
    src = _make_src(tmp_path / "src")
    r = CliRunner().invoke(app, ["--src", str(src), "--out", str(tmp_path / "o"), "--ratios", "70/15/15", "--link"])
    assert r.exit_code == 0, r.output
    assert "train" in r.output and (tmp_path / "o" / "test" / "1_fake").is_dir()
    r = CliRunner().invoke(app, ["--src", str(src), "--out", str(tmp_path / "o"), "--ratios", "70/15/15"])
    assert r.exit_code != 0 and "not empty" in r.output
    r = CliRunner().invoke(app, ["--src", str(src), "--out", str(tmp_path / "o9"), "--ratios", "abc"])
    assert r.exit_code != 0 and "--ratios" in r.output
