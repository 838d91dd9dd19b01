"""One post-processing chain for real and fake images alike, and the shortcut probe that proves it.

Real media reach a detector after a life of their own: resizing, mild blur, a video codec, JPEG re-encoding with
chroma subsampling, or a lossless save. If only one class had that life, a detector would learn the file, not the
generator. ``postprocess`` draws every step with the same probabilities for both classes; ``shortcut_probe``
trains a scikit-learn classifier on file metadata alone (format, size, JPEG quantisation tables, quality estimate,
chroma subsampling) and reports its cross-validated AUC, which must stay near 0.5 (WildSynth's build asserts
≤ 0.55 on its own output).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

#: Pillow's ``subsampling`` codes: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0.
SUBSAMPLING_NAMES = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
_RESAMPLE = (Image.Resampling.BOX, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS)
# IJG's standard luminance table (JPEG Annex K.1), used to estimate the quality a file was saved at.
_STD_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)


@dataclass(frozen=True)
class ChainConfig:
    """Probabilities and ranges of each post-processing step (the same for both classes)."""

    grey_prob: float = 0.05
    resize_prob: float = 0.3
    resize_range: tuple[float, float] = (0.5, 1.0)
    min_side: int = 64
    blur_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 1.0)
    video_prob: float = 0.1
    video_crf: tuple[int, int] = (18, 32)
    jpeg_prob: float = 0.75
    jpeg_quality: tuple[int, int] = (60, 100)
    subsampling_weights: tuple[float, float, float] = (0.3, 0.1, 0.6)  # 4:4:4, 4:2:2, 4:2:0

    def to_dict(self) -> dict:
        return asdict(self)


def postprocess(img: np.ndarray, rng: np.random.Generator, cfg: ChainConfig = ChainConfig()) -> tuple[bytes, str, dict]:
    """Run one draw of the chain on an (H, W, 3) uint8 RGB image.

    Returns ``(file_bytes, extension, steps)``: the encoded file (``.jpg`` or ``.png``) and what was applied.
    Order: grey → resize (random factor and filter; never below ``cfg.min_side``) → Gaussian blur → H.264 intra
    round trip (a video frame) → JPEG (quality and chroma subsampling drawn) or PNG (compression level drawn).
    """
    im = Image.fromarray(img)
    steps: dict = {}
    if rng.random() < cfg.grey_prob:
        im = im.convert("L").convert("RGB")
        steps["grey"] = True
    if rng.random() < cfg.resize_prob:
        f = float(rng.uniform(*cfg.resize_range))
        w, h = im.size
        f = max(f, cfg.min_side / max(1, min(w, h)))
        if f < 1.0:
            flt = _RESAMPLE[int(rng.integers(len(_RESAMPLE)))]
            im = im.resize((max(2, round(w * f)), max(2, round(h * f))), flt)
            steps["resize"] = round(f, 3)
    if rng.random() < cfg.blur_prob:
        s = float(rng.uniform(*cfg.blur_sigma))
        im = im.filter(ImageFilter.GaussianBlur(s))
        steps["blur"] = round(s, 3)
    if rng.random() < cfg.video_prob:
        crf = int(rng.integers(cfg.video_crf[0], cfg.video_crf[1] + 1))
        im = Image.fromarray(h264_roundtrip(np.asarray(im), crf))
        steps["h264_crf"] = crf
    buf = io.BytesIO()
    if rng.random() < cfg.jpeg_prob:
        q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        ss = int(rng.choice(3, p=np.asarray(cfg.subsampling_weights) / sum(cfg.subsampling_weights)))
        im.save(buf, format="JPEG", quality=q, subsampling=ss)
        steps.update(format="jpeg", quality=q, subsampling=SUBSAMPLING_NAMES[ss])
        return buf.getvalue(), ".jpg", steps
    level = int(rng.integers(1, 10))
    im.save(buf, format="PNG", compress_level=level)
    steps.update(format="png", compress_level=level)
    return buf.getvalue(), ".png", steps


def h264_roundtrip(img: np.ndarray, crf: int) -> np.ndarray:
    """Encode an (H, W, 3) uint8 RGB image as one H.264 intra frame (libx264, yuv420p, constant rate factor
    ``crf``) and decode it back, as a frame grabbed from a phone video would look. Odd sides are padded by
    edge replication for the codec and cropped back. Uses PyAV (FFmpeg)."""
    import av

    h, w = img.shape[:2]
    x = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if (h % 2 or w % 2) else img
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = x.shape[1], x.shape[0], "yuv420p"
        s.options = {"crf": str(crf), "preset": "veryfast"}
        for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(x), format="rgb24")):
            c.mux(p)
        for p in s.encode():
            c.mux(p)
    buf.seek(0)
    with av.open(buf) as d:
        frame = next(d.decode(video=0)).to_ndarray(format="rgb24")
    return np.ascontiguousarray(frame[:h, :w])


def jpeg_quality_estimate(luma_table: np.ndarray) -> float:
    """IJG quality (1–100) whose scaled standard luminance table is closest to ``luma_table`` (64 values)."""
    best, best_err = 50.0, np.inf
    for q in range(1, 101):
        scale = 5000 / q if q < 50 else 200 - 2 * q
        t = np.clip(np.floor((_STD_LUMA * scale + 50) / 100), 1, 255)
        err = float(np.abs(t - luma_table).sum())
        if err < best_err:
            best, best_err = float(q), err
    return best


def metadata_features(path: Path) -> list[float]:
    """What a file says about itself without its pixels' content: [is_jpeg, width, height, aspect, pixels,
    luma table mean, chroma table mean, quality estimate, subsampling code, progressive]."""
    with Image.open(path) as im:
        w, h = im.size
        is_jpeg = im.format == "JPEG"
        luma = chroma = q = ss = prog = 0.0
        if is_jpeg:
            tables = im.quantization or {}
            if 0 in tables:
                lt = np.asarray(tables[0], dtype=np.float64)
                luma = float(lt.mean())
                q = jpeg_quality_estimate(lt)
            if 1 in tables:
                chroma = float(np.mean(tables[1]))
            from PIL import JpegImagePlugin

            ss = float(JpegImagePlugin.get_sampling(im))
            prog = float(bool(im.info.get("progressive") or im.info.get("progression")))
    return [float(is_jpeg), float(w), float(h), w / max(1, h), float(w * h), luma, chroma, q, ss, prog]


def shortcut_probe(real: list[Path], fake: list[Path], seed: int = 0) -> dict:
    """Cross-validated AUC (5 folds) of a gradient-boosted classifier that sees only ``metadata_features``.

    0.5 means file metadata cannot tell the classes apart. Also reports, for information, the AUC of the same
    probe on bytes per pixel (a content statistic, not metadata: smoother images compress better).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    paths = list(real) + list(fake)
    y = np.array([0] * len(real) + [1] * len(fake))
    X = np.array([metadata_features(p) for p in paths])
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    clf = HistGradientBoostingClassifier(max_iter=100, random_state=seed)
    p = cross_val_predict(clf, X, y, cv=cv, method="predict_proba")[:, 1]
    bpp = np.array([[p_.stat().st_size / max(1.0, x[4])] for p_, x in zip(paths, X, strict=True)])
    p2 = cross_val_predict(clf, bpp, y, cv=cv, method="predict_proba")[:, 1]
    return {"auc": round(float(roc_auc_score(y, p)), 4), "n_real": len(real), "n_fake": len(fake),
            "features": ["is_jpeg", "width", "height", "aspect", "pixels", "luma_qtable_mean",
                         "chroma_qtable_mean", "quality_estimate", "subsampling", "progressive"],
            "classifier": "HistGradientBoostingClassifier, 5-fold stratified CV",
            "bytes_per_pixel_auc": round(float(roc_auc_score(y, p2)), 4)}
