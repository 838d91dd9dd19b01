"""NPR-friendly preprocessing and the field's augmentations.

Default for NPR models: no resize (resizing destroys the up-sampling trace NPR reads); random crop for
training, centre crop for evaluation; odd sizes are trimmed to even by the model. Augmentations (CNNDetection's
blur + JPEG, and flips) are off by default and applied to the uint8 image before cropping.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from fakelite.data.preprocess import Preprocess


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentations, each applied with its probability (all off by default)."""

    hflip: float = 0.0
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.0, 3.0)
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 100)
    # the `robust` recipe adds these (matching fakelite robustness's perturbations)
    noise_prob: float = 0.0
    noise_sigma: tuple[float, float] = (0.0, 10.0)
    dark_prob: float = 0.0
    dark_gamma: tuple[float, float] = (1.0, 2.5)
    dark_brightness: tuple[float, float] = (1.0, 1.0)  # brightness factor drawn with the gamma (1 = gamma only)
    occlude_prob: float = 0.0
    occlude_frac: tuple[float, float] = (0.1, 0.4)
    rescale_prob: float = 0.0
    rescale_range: tuple[float, float] = (0.5, 2.0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> AugmentConfig:
        if not d:
            return cls()
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**d)

    @property
    def active(self) -> bool:
        return any(getattr(self, k) > 0 for k in ("hflip", "blur_prob", "jpeg_prob", "noise_prob", "dark_prob",
                                                   "occlude_prob", "rescale_prob"))


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of std `sigma` pixels (kernel sized by OpenCV from sigma, reflect-101 borders)."""
    if sigma <= 0:
        return img
    import cv2  # heavy optional module: not loaded by `import fakelite`

    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT101)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through Pillow's JPEG encoder at `quality` (4:2:0 chroma subsampling, Pillow's default)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.uint8).copy()


def gaussian_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive i.i.d. Gaussian noise of std `sigma` in 0–255 units, rounded and clipped to uint8."""
    return np.clip(img.astype(np.float32) + rng.normal(0, sigma, img.shape), 0, 255).round().astype(np.uint8)


def low_light(img: np.ndarray, gamma: float, brightness: float = 1.0) -> np.ndarray:
    """Under-exposure: out = 255 · (brightness · x/255)^gamma (brightness ≤ 1 darkens linearly, gamma > 1 crushes
    shadows), rounded to uint8."""
    x = np.clip(brightness * (img.astype(np.float32) / 255.0), 0.0, 1.0)
    return np.clip(255.0 * x ** gamma + 0.5, 0, 255).astype(np.uint8)


def low_light_level(img: np.ndarray, b: float) -> np.ndarray:
    """The `fakelite robustness` low-light level b ∈ (0, 1]: brightness b, then gamma 2 − b (b = 1: unchanged)."""
    return low_light(img, 2.0 - b, brightness=b)


def occlude(img: np.ndarray, frac: float, rng: np.random.Generator) -> np.ndarray:
    """Grey (128) rectangle covering `frac` of the image area (same aspect as the image) at a random place."""
    h, w = img.shape[:2]
    side_h = max(1, int(round(h * np.sqrt(frac))))
    side_w = max(1, int(round(w * np.sqrt(frac))))
    y = int(rng.integers(0, h - side_h + 1))
    x = int(rng.integers(0, w - side_w + 1))
    out = img.copy()
    out[y : y + side_h, x : x + side_w] = 128
    return out


def rescale(img: np.ndarray, factor: float) -> np.ndarray:
    """Resize by `factor` (area filter when shrinking, bilinear when enlarging); sides at least 2 pixels."""
    h, w = img.shape[:2]
    nh, nw = max(2, int(round(h * factor))), max(2, int(round(w * factor)))
    import cv2

    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, (nw, nh), interpolation=interp)


def augment(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Apply the configured augmentations (order: rescale, blur, JPEG, noise, low light, occlusion, flip)."""
    if cfg.rescale_prob and rng.random() < cfg.rescale_prob:
        img = rescale(img, float(rng.uniform(*cfg.rescale_range)))
    if cfg.blur_prob and rng.random() < cfg.blur_prob:
        img = gaussian_blur(img, float(rng.uniform(*cfg.blur_sigma)))
    if cfg.jpeg_prob and rng.random() < cfg.jpeg_prob:
        img = jpeg(img, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    if cfg.noise_prob and rng.random() < cfg.noise_prob:
        img = gaussian_noise(img, float(rng.uniform(*cfg.noise_sigma)), rng)
    if cfg.dark_prob and rng.random() < cfg.dark_prob:
        gamma = float(rng.uniform(*cfg.dark_gamma))
        b = 1.0 if tuple(cfg.dark_brightness) == (1.0, 1.0) else float(rng.uniform(*cfg.dark_brightness))
        img = low_light(img, gamma, brightness=b)
    if cfg.occlude_prob and rng.random() < cfg.occlude_prob:
        img = occlude(img, float(rng.uniform(*cfg.occlude_frac)), rng)
    if cfg.hflip and rng.random() < cfg.hflip:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def resize_short(img: np.ndarray, short: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = short / min(h, w)
    if s == 1:
        return img
    nh, nw = max(2, int(round(h * s))), max(2, int(round(w * s)))
    import cv2

    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Centre crop to size×size; a smaller side is kept whole (never up-sampled)."""
    h, w = img.shape[:2]
    ch, cw = min(size, h), min(size, w)
    y, x = (h - ch) // 2, (w - cw) // 2
    return img[y : y + ch, x : x + cw]


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Random size×size crop; a smaller image is reflect-padded first so batches stack."""
    h, w = img.shape[:2]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        img = np.pad(img, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode="reflect")
        h, w = img.shape[:2]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return img[y : y + size, x : x + size]


def npr_image(img: np.ndarray) -> np.ndarray:
    """NPR of an (H, W, 3) image in numpy: x − up2_nearest(x[::2, ::2]) as float64 in pixel units, odd sides
    trimmed (the model's `fakelite.models.npr_resnet.npr`, for features and pictures)."""
    x = img.astype(np.float64)
    x = x[: x.shape[0] // 2 * 2, : x.shape[1] // 2 * 2]
    return x - np.repeat(np.repeat(x[::2, ::2], 2, axis=0), 2, axis=1)


def to_tensor(img: np.ndarray, pre: Preprocess) -> torch.Tensor:
    """uint8 HWC RGB → normalised float CHW (trimmed to even sides)."""
    h, w = img.shape[:2]
    img = img[: h - h % 2, : w - w % 2]
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(pre.mean).view(3, 1, 1)
    std = torch.tensor(pre.std).view(3, 1, 1)
    return (t - mean) / std


RESIZE256 = 256  # CNNDetection's test-time short side (Wang et al., CVPR 2020, "resize to 256, crop 224")


def tile_starts(side: int, tile: int, n: int) -> list[int]:
    """Start offsets of `n` windows of length `tile` evenly spaced over [0, side): the first at 0, the last at
    side − tile, the others at round(i·(side − tile)/(n − 1)); n = 1 (or tile ≥ side) gives the centred window
    (side − tile)//2, as `center_crop`."""
    if n <= 1 or tile >= side:
        return [max(0, (side - tile) // 2)]
    return [int(round(i * (side - tile) / (n - 1))) for i in range(n)]


def tile_grid(h: int, w: int, crop: int, max_tiles: int) -> tuple[int, int]:
    """Rows × columns of the "tiles" policy for an h×w image: ceil(h/crop) × ceil(w/crop) windows (full cover),
    shrunk when that exceeds `max_tiles` by the common factor sqrt(max_tiles/(rows·cols)) (floored, at least 1),
    then the columns filled up to the cap. A side shorter than `crop` gets one window (the whole side)."""
    rows, cols = max(1, -(-h // crop)), max(1, -(-w // crop))
    if rows * cols > max_tiles:
        f = (max_tiles / (rows * cols)) ** 0.5
        r = max(1, min(rows, int(rows * f)))
        c = max(1, min(cols, max_tiles // r))
        rows, cols = r, c
    return rows, cols


def eval_crops(img: np.ndarray, pre: Preprocess) -> list[np.ndarray]:
    """The crops (uint8 H×W×3 views of `img`) that score one evaluation image under `pre.policy`.

    - "center": `pre.resize` if set, then one centre crop of `pre.crop` (today's and NPR's convention; a side
      shorter than the crop is kept whole, never up-sampled).
    - "resize256": short side resized to 256 px (area filter when shrinking, bilinear when enlarging), then one
      centre crop (CNNDetection's test policy).
    - "tiles": `pre.resize` if set, then `tile_grid` rows × cols windows of `pre.crop` px at native resolution,
      row-major, positions from `tile_starts` (evenly spaced, covering the image edge to edge). An image no larger
      than the crop gives one crop, the whole image, as "center" does.
    Combine the crops' logits with `aggregate_logits`. Raises ValueError for an unknown policy.
    """
    if pre.policy == "resize256":
        return [center_crop(resize_short(img, RESIZE256), pre.crop)]
    if pre.resize:
        img = resize_short(img, pre.resize)
    if pre.policy == "center":
        return [center_crop(img, pre.crop)]
    if pre.policy != "tiles":
        raise ValueError(f"unknown scoring policy {pre.policy!r}")
    h, w = img.shape[:2]
    th, tw = min(pre.crop, h), min(pre.crop, w)
    rows, cols = tile_grid(h, w, pre.crop, int(pre.max_tiles))
    return [img[y : y + th, x : x + tw] for y in tile_starts(h, th, rows) for x in tile_starts(w, tw, cols)]


def aggregate_logits(logits, pre: Preprocess) -> float:
    """One image's logit from its crops' logits (a 1-D sequence, at least one): "mean" (mean logit), "max", or
    "topk" (mean of the min(topk, n) largest). A single crop returns its logit unchanged. ValueError if empty."""
    z = np.asarray(logits, dtype=np.float64).reshape(-1)
    if z.size == 0:
        raise ValueError("aggregate_logits: no crop logits")
    if z.size == 1:
        return float(z[0])
    if pre.aggregate == "max":
        return float(z.max())
    if pre.aggregate == "topk":
        return float(np.sort(z)[::-1][: max(1, int(pre.topk))].mean())
    if pre.aggregate != "mean":
        raise ValueError(f"unknown aggregate {pre.aggregate!r}")
    return float(z.mean())


def single_crop(pre: Preprocess) -> Preprocess:
    """`pre` with "tiles" replaced by "center": for consumers that need one (3, H, W) tensor per image
    (calibration statistics, BN recomputation, parity samples); other policies are returned unchanged."""
    return pre.with_scoring(policy="center") if pre.policy == "tiles" else pre


def eval_transform(img: np.ndarray, pre: Preprocess) -> torch.Tensor:
    """One normalised (3, H, W) tensor: the single crop of "center"/"resize256"; for "tiles" the centre crop (use
    `eval_tensors` to get every tile)."""
    if pre.policy == "resize256":
        return to_tensor(eval_crops(img, pre)[0], pre)
    if pre.resize:
        img = resize_short(img, pre.resize)
    return to_tensor(center_crop(img, pre.crop), pre)


def eval_tensors(img: np.ndarray, pre: Preprocess) -> torch.Tensor:
    """Every crop of `eval_crops` as one normalised (K, 3, H, W) tensor (all crops of an image share a shape)."""
    return torch.stack([to_tensor(c, pre) for c in eval_crops(img, pre)])


def train_transform(img: np.ndarray, pre: Preprocess, aug: AugmentConfig | None, rng: np.random.Generator) -> torch.Tensor:
    if aug is not None and aug.active:
        img = augment(img, aug, rng)
    if pre.resize:
        img = resize_short(img, pre.resize)
    return to_tensor(random_crop(img, pre.crop, rng), pre)
