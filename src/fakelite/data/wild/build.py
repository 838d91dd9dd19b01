"""WildSynth: a deepfake benchmark that looks like real media — native resolution, many sources, many generator
families, and one post-processing chain for both classes.

FaceSynth (``fakelite.data.synth``) area-resizes CelebA faces to 64 px and saves both classes as PNG; detectors
trained on it learn traces no real photo keeps. WildSynth keeps every real photograph at its native resolution
(``fakelite.data.wild.sources``: CelebA faces plus camera photographs from scikit-image, scikit-learn, OpenCV's
samples and Debian wallpapers), makes fakes from the same images with seven generator families
(``fakelite.data.wild.generators`` plus a face-region swap), and sends every file, real or fake, through the same
random post-processing chain (``fakelite.data.wild.postprocess``).

Families seen in training (``TRAIN_FAMILIES``) and held out (``HELDOUT_FAMILIES``), as ForenSynths trains on
ProGAN alone: held-out numbers say how a detector does on generators it never saw.

Layout::

    OUT/train/{0_real,1_fake}            2 views per real unit (two chain draws; fakes of 2 seen families)
    OUT/val/{0_real,1_fake}              held-out sources, seen families (model selection, FPR threshold)
    OUT/test/<family>/{0_real,1_fake}    held-out sources; every family; photos whole (≤ 1024 px)
    OUT/summary.json                     counts, sources, chain, shortcut probe

Train/val photographs are cut into 256-px regions (each region is one unit, so big photos give many samples);
test photographs stay whole, so scoring policies are judged on large images. Everything is seeded: the same
sources and generator weights give byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fakelite.data.synth.generators import faceswap_blend
from fakelite.data.synth.source import SPLITS as CELEBA_SPLITS
from fakelite.data.synth.source import default_cache_dir
from fakelite.data.transforms import jpeg
from fakelite.data.wild.generators import (
    FAMILIES as GENERATOR_FAMILIES,
)
from fakelite.data.wild.generators import (
    QUICK_TRAIN,
    WEIGHTS_DIR,
    TrainConfig,
    apply_generator,
    load_generator,
    save_generator,
    train_family,
)
from fakelite.data.wild.postprocess import ChainConfig, postprocess, shortcut_probe
from fakelite.data.wild.sources import RealImage, celeba_images, photo_sources
from fakelite.utils.progress import ProgressGroup

#: wildsynth-1 (the packaged models' training data) had a collapsed, all-black ``gan`` family in training;
#: wildsynth-2 left it out; wildsynth-3 brings the retrained GAN decoder back as a held-out family.
VERSION = "wildsynth-3"
#: Salt of the photographs' train/val/test split. Fixed at its wildsynth-1 value, so that the split stays the same
#: across versions and a model trained on an earlier version is never tested on its own training photos.
SPLIT_SALT = "wildsynth-1"
TRAIN_FAMILIES = ("transposed", "pixelshuffle", "lae8", "faceswap")
HELDOUT_FAMILIES = ("nearest", "bilinear", "lae4", "gan")
FAMILIES = (*TRAIN_FAMILIES, *HELDOUT_FAMILIES)
#: The generator whose output the face-region swap pastes in.
FACESWAP_SOURCE = "pixelshuffle"
REGION = 256
TRAIN_VIEWS = 2
PROBE_MAX_AUC = 0.55
#: Probability that a fake was JPEG-compressed once before its post-processing (reals come with a history).
FAKE_PRE_JPEG = 0.5


@dataclass
class Unit:
    """One real image (a face, a photo region or a whole photo) with its split."""

    id: str
    split: str
    img: np.ndarray
    face: bool


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def photo_split(image_id: str) -> str:
    """Split of a photograph by a hash of its id: 10 % val, 30 % test, 60 % train (the same in every build and
    every WildSynth version: SPLIT_SALT)."""
    r = _h(SPLIT_SALT, image_id) % 10
    return "val" if r == 0 else "test" if r <= 3 else "train"


def celeba_face_mask(h: int, w: int) -> np.ndarray:
    """Soft ellipse over the face of an aligned CelebA image (178×218: centre (89, 120), semi-axes 53 × 68),
    scaled to h×w, with a cosine fall-off band (FaceSynth's ``face_mask`` on the native frame)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx, ay, ax = 120 / 218 * h, 89 / 178 * w, 68 / 218 * h, 53 / 178 * w
    r = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
    t = np.clip((r - 0.825) / 0.35, 0.0, 1.0)
    return (0.5 * (1.0 + np.cos(np.pi * t))).astype(np.float32)


def _regions(img: np.ndarray, size: int = REGION) -> list[tuple[int, int, np.ndarray]]:
    h, w = img.shape[:2]
    if h <= size and w <= size:
        return [(0, 0, img)]
    out = []
    for y in range(0, max(1, h - size // 2), size):
        for x in range(0, max(1, w - size // 2), size):
            r = img[y : y + size, x : x + size]
            if min(r.shape[:2]) >= size // 2:
                out.append((y, x, r))
    return out


def _units(faces: list[RealImage], photos: list[RealImage], quick: bool) -> list[Unit]:
    units: list[Unit] = []
    ranges = {s: range(lo, hi + 1) for s, (lo, hi) in CELEBA_SPLITS.items()}
    for r in faces:
        n = int(r.name[:6])
        split = next(s for s, rg in ranges.items() if n in rg)
        units.append(Unit(r.id, split, r.load(), True))
    for p in photos:
        split = photo_split(p.id)
        img = p.load()
        if split == "test":
            units.append(Unit(p.id, split, img, False))
        else:
            units += [Unit(f"{p.id}@{y},{x}", split, reg, False) for y, x, reg in _regions(img)]
    if quick:
        keep = {"train": 24, "val": 8, "test": 8}
        out: list[Unit] = []
        for s, k in keep.items():
            su = [u for u in units if u.split == s]
            out += [u for u in su if u.face][: k - 2] + [u for u in su if not u.face][:2]
        units = out
    return units


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _generators(train_imgs: list[np.ndarray], quick: bool, retrain: bool, cache_dir: Path, seed: int,
                prog: ProgressGroup) -> tuple[dict[str, torch.nn.Module], dict]:
    """Load the shipped generator weights (full builds) or train them (quick builds, missing files, --retrain)."""
    cfg = QUICK_TRAIN if quick else TrainConfig()
    wanted = sorted({f for f in FAMILIES if f != "faceswap"} | {FACESWAP_SOURCE})
    models: dict[str, torch.nn.Module] = {}
    info: dict = {}
    for fam in wanted:
        path = (cache_dir / "generators" / f"{VERSION}_{fam}_quick_seed{seed}.safetensors" if quick
                else WEIGHTS_DIR / f"{fam}.safetensors")
        t0 = time.perf_counter()
        model = None if retrain or not path.exists() else load_generator(path, fam)
        source = "shipped" if not quick else "cache"
        if model is None:
            adv = prog.task(f"training generator {fam}", cfg.steps)
            model = train_family(fam, train_imgs, cfg, seed, tick=lambda s, loss, adv=adv: adv(1, f"L1 {loss:.4f}"))
            save_generator(model, fam, cfg, path, {"seed": seed, "trained_on": "WildSynth train reals"})
            source = "trained"
        models[fam] = model
        info[fam] = {"source": source, "file": str(path), "seconds": round(time.perf_counter() - t0, 2),
                     "params": sum(p.numel() for p in model.parameters())}
    return models, info


def _fake(models: dict, family: str, unit: Unit, seed: int) -> np.ndarray:
    if family == "faceswap":
        gen = apply_generator(models[FACESWAP_SOURCE], FACESWAP_SOURCE, unit.img, seed=seed)
        return faceswap_blend(unit.img, gen, celeba_face_mask(*unit.img.shape[:2]))
    return apply_generator(models[family], family, unit.img, seed=seed)


def _pre_jpeg(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.random() < FAKE_PRE_JPEG:
        return jpeg(img, int(rng.integers(70, 96)))
    return img


def build_wildsynth(out: Path, quick: bool = False, seed: int = 0, cache_dir: Path | None = None,
                    progress: bool = True, retrain_generators: bool = False,
                    chain: ChainConfig = ChainConfig(), splits: tuple[str, ...] = ("train", "val", "test"),
                    test_units: int | None = None) -> dict:
    """Build WildSynth under ``out`` and return its summary (also written to ``out/summary.json``).

    ``quick``: a few dozen units and tiny generators trained on the fly (tests). ``retrain_generators``: train
    the generator families from scratch instead of loading the weights shipped in the package (and overwrite
    them there). ``splits``: the splits to write (the demo writes only ``("test",)``); the shortcut probe runs
    when train is among them. ``test_units``: keep an even sample of this many test units (faces and photographs
    in their proportions; files are identical to the same units' files in a full build). Raises FaceSynthError
    when CelebA cannot be had, ValueError on an unknown split; other sources are reported and skipped.
    """
    bad = [x for x in splits if x not in ("train", "val", "test")]
    if bad or not splits:
        raise ValueError(f"splits must be among train, val, test (got {', '.join(splits) or 'none'})")
    if test_units is not None and (test_units < 1 or "test" not in splits):
        raise ValueError(f"--test-units must be >= 1 and needs the test split (got {test_units} with splits "
                         f"{', '.join(splits)})")
    t0 = time.perf_counter()
    out = Path(out)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    faces = celeba_images(cache_dir)
    photos, status = photo_sources(cache_dir)
    units = _units(faces, photos, quick)
    if test_units is not None:
        test = [u for u in units if u.split == "test"]
        keep = {id(u) for u in test[:: max(1, len(test) // max(1, test_units))][:test_units]}
        units = [u for u in units if u.split != "test" or id(u) in keep]
    summary: dict = {"name": "WildSynth", "version": VERSION, "seed": seed, "quick": quick, "splits": list(splits),
                     "sources": {"celeba": f"ok: {len(faces)} (non-commercial research only)", **status},
                     "train_families": list(TRAIN_FAMILIES), "heldout_families": list(HELDOUT_FAMILIES),
                     "faceswap_source": FACESWAP_SOURCE, "chain": chain.to_dict(), "fake_pre_jpeg": FAKE_PRE_JPEG,
                     "region": REGION, "train_views": TRAIN_VIEWS}
    for sub in splits:
        shutil.rmtree(out / sub, ignore_errors=True)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)  # fixed thread count: identical floats, identical files on every build
    try:
        with ProgressGroup(quiet=not progress) as prog:
            train_imgs = [u.img for u in units if u.split == "train"]
            models, summary["generators"] = _generators(train_imgs, quick, retrain_generators, cache_dir, seed, prog)
            counts: dict = {}

            def write(root: Path, cls: str, stem: str, img: np.ndarray, rng: np.random.Generator) -> Path:
                data, ext, _ = postprocess(img, rng, chain)
                p = root / cls / f"{_safe(stem)}{ext}"
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
                counts.setdefault(str(root.relative_to(out)), {}).setdefault(cls, 0)
                counts[str(root.relative_to(out))][cls] += 1
                return p

            jobs = [u for u in units if u.split in ("train", "val") and u.split in splits]
            tests = [u for u in units if u.split == "test" and "test" in splits]
            total = sum(TRAIN_VIEWS if u.split == "train" else 1 for u in jobs) + len(tests) * len(FAMILIES)
            adv = prog.task("writing WildSynth", total)
            for u in jobs:
                fams = [f for f in TRAIN_FAMILIES if u.face or f != "faceswap"]
                views = TRAIN_VIEWS if u.split == "train" else 1
                for v in range(views):
                    rng = np.random.default_rng(_h(VERSION, seed, u.id, v))
                    fam = fams[(_h(u.id, seed) + v) % len(fams)]
                    stem = f"{u.id}_{v}"
                    write(out / u.split, "0_real", stem, u.img, rng)
                    fake = _pre_jpeg(_fake(models, fam, u, _h(u.id, v) % 2**31), rng)
                    write(out / u.split, "1_fake", f"{stem}_{fam}", fake, rng)
                    adv(1)
            for fam in FAMILIES:
                for u in tests:
                    if fam == "faceswap" and not u.face:
                        adv(1)
                        continue
                    rng = np.random.default_rng(_h(VERSION, seed, u.id, "test", fam))
                    write(out / "test" / fam, "0_real", u.id, u.img, rng)
                    fake = _pre_jpeg(_fake(models, fam, u, _h(u.id, fam) % 2**31), rng)
                    write(out / "test" / fam, "1_fake", u.id, fake, rng)
                    adv(1)
    finally:
        torch.set_num_threads(prev)
    summary["counts"] = counts
    summary["units"] = {s: sum(1 for u in units if u.split == s) for s in splits}
    probe = None
    if "train" in splits:
        probe = shortcut_probe(sorted((out / "train" / "0_real").iterdir()),
                               sorted((out / "train" / "1_fake").iterdir()), seed=seed)
        probe["max_auc"] = PROBE_MAX_AUC
        probe["passed"] = probe["auc"] <= PROBE_MAX_AUC
        summary["shortcut_probe"] = probe
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if progress:
        from rich.console import Console

        con = Console()
        con.print(f"WildSynth written to {out} in {summary['wall_s']} s; units {summary['units']}")
        con.print("sources: " + ", ".join(f"{k} {v}" for k, v in summary["sources"].items()))
        if probe is not None:
            con.print(f"shortcut probe (metadata only, {probe['classifier']}): AUC {probe['auc']:.3f} "
                      f"({'ok' if probe['passed'] else 'ABOVE'} ≤ {PROBE_MAX_AUC}); bytes/pixel AUC "
                      f"{probe['bytes_per_pixel_auc']:.3f} (content, for information)")
    return summary


__all__ = ["FAMILIES", "GENERATOR_FAMILIES", "HELDOUT_FAMILIES", "TRAIN_FAMILIES", "VERSION", "build_wildsynth"]
