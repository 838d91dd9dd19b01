"""WildSynth's generator families: small image decoders this project trains itself, applied at native resolution.

Each family rebuilds a real image from a compressed representation, so a fake shares its real's content and
differs in the decoder's traces — the up-sampling and synthesis fingerprints that real generators leave:

* ``transposed``, ``nearest``, ``bilinear``, ``pixelshuffle``: ×2 super-resolution decoders (FaceSynth's
  :class:`fakelite.data.synth.generators.SRGenerator`) that differ only in their last up-sampling op;
* ``lae4``, ``lae8``: latent autoencoders with a 4-channel latent at 1/4 and 1/8 of the resolution and a decoder of
  (nearest ×2 → 3×3 conv → residual block) stages, the decoder shape of latent-diffusion VAEs (Rombach et al.,
  CVPR 2022, §3 and appendix G);
* ``gan``: a decoder of stride-2 transposed convolutions with per-pixel noise injection, trained with an L1 +
  hinge adversarial loss against a spectrally normalised PatchGAN discriminator (Isola et al., CVPR 2017; Miyato et
  al., ICLR 2018), after an L1-only warm-up, as GAN generators are.

Every generator is fully convolutional: any H×W (padded by reflection to a multiple of its factor, cropped back)
gives an H×W output. Weights ship inside the package (``fakelite/data/generator_weights/<family>.safetensors``),
so a build is fast and gives identical files on every CPU; ``train_family`` retrains them.
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

from fakelite.data.synth.generators import SR_FAMILIES, SRGenerator

#: Bump when a generator's architecture or training changes (shipped weights carry it and are refused otherwise).
GENERATOR_VERSION = "wildsynth-gen-1"
#: Per-family overrides of GENERATOR_VERSION: the retrained GAN decoder (spectral norm + warm-up, see TrainConfig).
FAMILY_VERSIONS = {"gan": "wildsynth-gen-2"}
LATENT_FAMILIES = ("lae4", "lae8")
GAN_FAMILIES = ("gan",)
FAMILIES = (*SR_FAMILIES, *LATENT_FAMILIES, *GAN_FAMILIES)
#: Families whose trained weights ship in the package. The first trained ``gan`` decoder (wildsynth-gen-1) collapsed
#: to an all-black output: its unnormalised discriminator's hinge term grew without bound and won over L1 from the
#: first steps. tests/test_wildsynth.py caught it (PSNR 3.2 dB). wildsynth-gen-2 normalises the discriminator
#: spectrally, trains L1-only for the first ``gan_warmup`` of the steps and ramps the adversarial weight in.
SHIPPED_FAMILIES = FAMILIES
WEIGHTS_DIR = Path(__file__).parents[1] / "generator_weights"


@dataclass(frozen=True)
class TrainConfig:
    """How a family's generator is trained (stored in the weights file)."""

    width: int = 32
    steps: int = 1500
    batch: int = 16
    patch: int = 64
    lr: float = 2e-3
    adv_weight: float = 0.05  # gan only: weight of the hinge generator loss after the warm-up
    gan_warmup: float = 0.3  # gan only: fraction of the steps trained with L1 alone, then a linear ramp of as long


QUICK_TRAIN = TrainConfig(width=8, steps=60, batch=4, patch=32)


class _Res(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1)
        self.c2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(F.silu(self.c1(x)))


class LatentAutoencoder(nn.Module):
    """Encoder to a 4-channel latent at 1/``factor`` resolution, decoder of nearest-×2 + conv stages.

    Input/output: (N, 3, H, W) in [0, 1] with H, W multiples of ``factor``.
    """

    def __init__(self, factor: int = 8, width: int = 32, latent: int = 4) -> None:
        super().__init__()
        if factor not in (4, 8):
            raise ValueError(f"factor must be 4 or 8, not {factor}")
        stages = {4: 2, 8: 3}[factor]
        self.factor = factor
        enc: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1)]
        for _ in range(stages):
            enc += [nn.SiLU(), nn.Conv2d(width, width, 4, stride=2, padding=1), _Res(width)]
        enc += [nn.SiLU(), nn.Conv2d(width, latent, 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(latent, width, 3, padding=1), _Res(width)]
        for _ in range(stages):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(width, width, 3, padding=1), _Res(width)]
        dec += [nn.SiLU(), nn.Conv2d(width, 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(self.encoder(x)))


class GANDecoder(nn.Module):
    """Encoder to 1/4 resolution, decoder of two stride-2 transposed convs with per-pixel noise injection
    (StyleGAN's noise inputs, Karras et al. CVPR 2019 §3.2) and LeakyReLU, as GAN generators synthesise.

    Input/output: (N, 3, H, W) in [0, 1], H, W multiples of 4. The noise is seeded per call (``seed``) so a build
    is reproducible.
    """

    factor = 4

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 8, 1),
        )
        self.inp = nn.Conv2d(8, width, 3, padding=1)
        self.up1 = nn.ConvTranspose2d(width, width, 4, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(width, width, 4, stride=2, padding=1)
        self.noise_gain = nn.Parameter(torch.full((2,), 0.05))
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        h = F.leaky_relu(self.inp(self.encoder(x)), 0.2)
        for i, up in enumerate((self.up1, self.up2)):
            h = up(h)
            noise = torch.randn(h.shape[0], 1, h.shape[2], h.shape[3], generator=g)
            h = F.leaky_relu(h + self.noise_gain[i] * noise, 0.2)
        return torch.sigmoid(self.out(h))


class _PatchD(nn.Module):
    """PatchGAN discriminator with spectral normalisation on every conv (Miyato et al., ICLR 2018): a 1-Lipschitz
    critic whose hinge loss stays bounded, so the generator's adversarial term cannot swamp L1."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(3, width, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(width, 2 * width, 4, 2, 1)), nn.LeakyReLU(0.2),
            sn(nn.Conv2d(2 * width, 1, 3, 1, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


def build_generator(family: str, width: int) -> nn.Module:
    """An untrained generator of ``family`` (one of FAMILIES)."""
    if family in SR_FAMILIES:
        return SRGenerator(family, width, 3)
    if family in LATENT_FAMILIES:
        return LatentAutoencoder(int(family[3:]), width)
    if family in GAN_FAMILIES:
        return GANDecoder(width)
    raise ValueError(f"unknown generator family {family!r}; choose one of {', '.join(FAMILIES)}")


def factor_of(family: str) -> int:
    """The spatial multiple an input must have for ``family`` (padding handles the rest)."""
    return 2 if family in SR_FAMILIES else (8 if family == "lae8" else 4)


def _forward(model: nn.Module, family: str, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    if family in SR_FAMILIES:
        return model(F.avg_pool2d(x, 2))
    if family in GAN_FAMILIES:
        return model(x, seed=seed)
    return model(x)


def _stable_seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:4], "little")


def random_patches(images: Sequence[np.ndarray], n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` random size×size patches (with random h-flips) from uint8 HWC images → (n, 3, size, size) in [0, 1]."""
    out = []
    for _ in range(n):
        img = images[int(torch.randint(0, len(images), (1,), generator=gen))]
        h, w = img.shape[:2]
        if h < size or w < size:
            img = np.pad(img, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)), mode="reflect")
            h, w = img.shape[:2]
        y = int(torch.randint(0, h - size + 1, (1,), generator=gen))
        x = int(torch.randint(0, w - size + 1, (1,), generator=gen))
        p = img[y : y + size, x : x + size]
        if bool(torch.rand(1, generator=gen) < 0.5):
            p = p[:, ::-1]
        out.append(np.ascontiguousarray(p))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div_(255.0)


def train_family(family: str, images: Sequence[np.ndarray], cfg: TrainConfig = TrainConfig(), seed: int = 0,
                 tick: Callable[[int, float], None] | None = None) -> nn.Module:
    """Train ``family``'s generator to reconstruct random patches of the real ``images`` (uint8 HWC).

    Loss: L1 (all families) + w(step) × hinge adversarial loss against a spectrally normalised PatchGAN (``gan``
    only; w = 0 for the first ``cfg.gan_warmup`` of the steps, then a linear ramp to ``cfg.adv_weight`` over as many
    steps). Adam, one-cycle schedule. Deterministic for a given seed and thread count.
    """
    s = _stable_seed(version_of(family), family, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s)
        model = build_generator(family, cfg.width)
        disc = _PatchD(cfg.width) if family in GAN_FAMILIES else None
    gen = torch.Generator().manual_seed(s + 1)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.5, 0.999) if disc else (0.9, 0.999))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr / 2, betas=(0.5, 0.999)) if disc else None
    model.train()
    for step in range(cfg.steps):
        x = random_patches(images, cfg.batch, cfg.patch, gen)
        y = _forward(model, family, x, seed=step)
        loss = F.l1_loss(y, x)
        warm = int(cfg.gan_warmup * cfg.steps)
        if disc is not None and opt_d is not None and step >= warm:
            d_loss = F.relu(1 - disc(x)).mean() + F.relu(1 + disc(y.detach())).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            ramp = min(1.0, (step - warm + 1) / max(1, warm))
            loss = loss + cfg.adv_weight * ramp * (-disc(y).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if tick is not None:
            tick(step, float(loss.detach()))
    return model.eval()


def version_of(family: str) -> str:
    """The generator version ``family``'s weights must carry (FAMILY_VERSIONS, else GENERATOR_VERSION)."""
    return FAMILY_VERSIONS.get(family, GENERATOR_VERSION)


def save_generator(model: nn.Module, family: str, cfg: TrainConfig, path: Path, extra: dict | None = None) -> None:
    """Write the generator as safetensors with its family, config and GENERATOR_VERSION in the metadata."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"family": family, "version": version_of(family), "config": asdict(cfg), **(extra or {})}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"fakelite": json.dumps(meta, sort_keys=True)})
    tmp.replace(path)


def load_generator(path: Path, family: str) -> nn.Module | None:
    """The generator stored at ``path`` if it is ``family``'s and of its current version (``version_of``), else
    None."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("fakelite", "{}"))
        if meta.get("family") != family or meta.get("version") != version_of(family):
            return None
        model = build_generator(family, int(meta["config"]["width"]))
        model.load_state_dict(load_file(str(path)))
    except Exception:  # a corrupt or foreign file is simply not used
        return None
    return model.eval()


@torch.inference_mode()
def apply_generator(model: nn.Module, family: str, img: np.ndarray, seed: int = 0, tile: int = 1024) -> np.ndarray:
    """Pass one uint8 (H, W, 3) image through ``family``'s generator at native resolution → uint8 (H, W, 3).

    The image is reflect-padded to a multiple of the family's factor and processed in overlapping tiles of
    ``tile`` pixels (64-pixel overlap, multiple of every factor) to bound memory; the output is cropped back.
    """
    f = factor_of(family)
    h, w = img.shape[:2]
    ph, pw = (-h) % f, (-w) % f
    x = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect") if (ph or pw) else img
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float().div_(255.0)
    H, W = t.shape[2:]
    out = torch.empty_like(t)
    ov = 64
    step = tile - 2 * ov
    for y0 in range(0, H, step):
        for x0 in range(0, W, step):
            ya, xa = max(0, y0 - ov), max(0, x0 - ov)
            yb, xb = min(H, y0 + step + ov), min(W, x0 + step + ov)
            y = _forward(model, family, t[:, :, ya:yb, xa:xb], seed=seed)
            out[:, :, y0 : min(H, y0 + step), x0 : min(W, x0 + step)] = \
                y[:, :, y0 - ya : y0 - ya + min(step, H - y0), x0 - xa : x0 - xa + min(step, W - x0)]
    res = out[0, :, :h, :w].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return res
