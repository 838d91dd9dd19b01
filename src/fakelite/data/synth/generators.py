"""FaceSynth's fakes: the benchmark's own ×2 super-resolution generators and the face-swap paste.

Four families (:data:`SR_FAMILIES`) rebuild a face from its 2× down-sampled copy and differ only in their LAST
up-sampling operation; ``faceswap`` pastes a reconstruction of the :data:`FACESWAP_SOURCE` generator into a soft
ellipse around the face. Trained generators are stored as safetensors, named by :func:`cache_key`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "FACESWAP_SOURCE",
    "FAMILIES",
    "FULL_CONFIG",
    "QUICK_CONFIG",
    "SR_FAMILIES",
    "VERSION",
    "GeneratorConfig",
    "SRGenerator",
    "cache_key",
    "downsample",
    "face_mask",
    "faceswap_blend",
    "load_generator",
    "psnr",
    "reconstruct",
    "save_generator",
    "to_tensor",
    "to_uint8",
    "train_generator",
]

#: Bump when anything that changes the generated images changes (invalidates cached generators).
VERSION = "facesynth-2"

SR_FAMILIES = ("transposed", "nearest", "bilinear", "pixelshuffle")
FAMILIES = (*SR_FAMILIES, "faceswap")
#: The generator whose reconstructions the ``faceswap`` family pastes into the face region.
FACESWAP_SOURCE = "pixelshuffle"


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


def downsample(x: torch.Tensor) -> torch.Tensor:
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


def cache_key(family: str, size: int, seed: int, quick: bool, cfg: GeneratorConfig) -> str:
    """The file stem a trained generator is stored under: version, family, size, seed, build kind, config hash."""
    cfg_hash = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:8]
    return f"{VERSION}_{family}_s{size}_seed{seed}_{'quick' if quick else 'full'}_{cfg_hash}"


def save_generator(model: SRGenerator, path: Path, meta: dict) -> None:
    """Write ``model``'s weights to ``path`` (safetensors, ``meta`` as JSON metadata), atomically."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"fakelite": json.dumps(meta, sort_keys=True)})
    tmp.replace(path)


def load_generator(path: Path, family: str, cfg: GeneratorConfig) -> SRGenerator | None:
    """The generator stored at ``path`` in eval mode, or None when the file is corrupt or stale."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
        model = SRGenerator(family, cfg.width, cfg.blocks)
        model.load_state_dict(state)
    except Exception:  # a corrupt or stale cache file is simply retrained
        return None
    return model.eval()


def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 images (N of H, W, 3) → float tensor (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Float tensor (N, 3, H, W) in [0, 1] → uint8 array (N, H, W, 3), clamped and rounded."""
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
        loss = F.l1_loss(model(downsample(hr)), hr)
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
        x = to_tensor(images[i : i + batch])
        out.extend(to_uint8(model(downsample(x))))
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


