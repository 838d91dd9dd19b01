"""Property-based tests (hypothesis, bounded): decoding never raises anything but BadInput; NPR's algebra holds
for every shape; preprocessing always yields an even-sided 3-channel tensor."""

from __future__ import annotations

import io

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fakelite.data.io import BadInput, decode_image
from fakelite.data.preprocess import Preprocess
from fakelite.data.transforms import eval_transform
from fakelite.models.npr_resnet import npr

SETTINGS = settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _encoded(fmt: str, size: tuple[int, int] = (12, 10), mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


SEEDS = {"PNG": _encoded("PNG"), "JPEG": _encoded("JPEG"), "GIF": _encoded("GIF", mode="P"),
         "BMP": _encoded("BMP"), "PNG-LA": _encoded("PNG", mode="LA")}


def _check_decode(data: bytes) -> None:
    try:
        a = decode_image(data, "fuzz")
    except BadInput as e:
        assert str(e).startswith("fuzz: ") and "\n" not in str(e)
        return
    assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and min(a.shape[:2]) >= 2


@SETTINGS
@given(st.binary(max_size=2048))
def test_random_bytes_decode_or_badinput(data):
    _check_decode(data)


@SETTINGS
@given(st.sampled_from(sorted(SEEDS)), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                  min_size=1, max_size=8),
       st.integers(0, 10_000))
def test_mutated_images_decode_or_badinput(fmt, flips, cut):
    """Byte flips and truncation of valid PNG/JPEG/GIF/BMP files (headers included)."""
    b = bytearray(SEEDS[fmt])
    for pos, val in flips:
        b[pos % len(b)] = val
    _check_decode(bytes(b[: max(1, len(b) - cut % len(b))]))


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 4), st.integers(2, 21), st.integers(2, 21), st.integers(0, 2**31 - 1))
def test_npr_zero_anchors_and_shape(n, c, h, w, seed):
    # sides ≥ 2: decoding refuses smaller images, so the model never sees them (a side of 1 trims to 0)
    x = torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed))
    y = npr(x)
    he, we = h - h % 2, w - w % 2  # odd sizes are trimmed to even
    assert y.shape == (n, c, he, we)
    assert torch.all(y[..., ::2, ::2] == 0)
    # every pixel is its difference to the top-left pixel of its 2×2 cell
    xe = x[..., :he, :we]
    anchor = xe[..., ::2, ::2].repeat_interleave(2, -2).repeat_interleave(2, -1)
    assert torch.equal(y, xe - anchor)


@SETTINGS
@given(st.integers(2, 80), st.integers(2, 80), st.sampled_from([16, 32, 64]), st.integers(0, 2**31 - 1))
def test_eval_transform_shapes(h, w, crop, seed):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    t = eval_transform(img, Preprocess(crop=crop))
    assert t.shape[0] == 3
    assert t.shape[1] == min(crop, h) - min(crop, h) % 2 and t.shape[2] == min(crop, w) - min(crop, w) % 2
    assert torch.isfinite(t).all()
