"""Datasets and loaders. Bad files are skipped with a warning and counted, never crash a run.

Determinism: the sample order and every random augmentation are derived from (seed, epoch, index), so an
interrupted run resumed at an epoch boundary reproduces the uninterrupted one exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fakelite.data.preprocess import Preprocess

from .folders import labelled_images, split_dir
from .io import BadInput, load_rgb
from .transforms import AugmentConfig, eval_tensors, eval_transform, single_crop, train_transform

log = logging.getLogger("fakelite.data")


class ImageDataset(Dataset):
    """Labelled images → (tensor, label, index). Items that fail to decode yield None (see `collate`)."""

    def __init__(
        self,
        items: Sequence[tuple[Path, int]],
        preprocess: Preprocess,
        train: bool = False,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        cache: bool | None = None,
    ):
        self.items = list(items)
        self.pre = preprocess
        self.train = train
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.cache_enabled = len(self.items) <= 20000 if cache is None else cache
        self._cache: dict[int, np.ndarray] = {}
        self.skipped: dict[str, str] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> np.ndarray | None:
        if i in self._cache:
            return self._cache[i]
        path = self.items[i][0]
        try:
            img = load_rgb(path)
        except BadInput as e:
            if str(path) not in self.skipped:
                log.warning("skipped %s", e)
                self.skipped[str(path)] = e.reason
            return None
        if self.cache_enabled:
            self._cache[i] = img
        return img

    def __getitem__(self, i: int):
        img = self.load(i)
        if img is None:
            return None
        label = self.items[i][1]
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            x = train_transform(img, self.pre, self.augment, rng)
        elif self.pre.policy == "tiles":  # (K, 3, H, W): every tile; predict_dataset aggregates their logits
            x = eval_tensors(img, self.pre)
        else:
            x = eval_transform(img, self.pre)
        return x, label, i


def collate(batch):
    """Drop undecodable items; stack when shapes agree, else return a list (evaluation of mixed sizes, and the
    "tiles" policy: each item is then a (K, 3, H, W) stack of one image's tiles)."""
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    xs, ys, idx = zip(*batch, strict=True)
    y = torch.tensor(ys, dtype=torch.float32)
    i = torch.tensor(idx)
    if all(x.shape == xs[0].shape and x.dim() == 3 for x in xs):
        return torch.stack(xs), y, i
    return list(xs), y, i


def shuffled_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


class EpochSampler(torch.utils.data.Sampler):
    """Deterministic per-epoch shuffle; with `rank/world` it shards like DistributedSampler (padded)."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world: int = 1):
        self.n, self.seed, self.shuffle, self.rank, self.world = n, seed, shuffle, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> list[int]:
        order = shuffled_order(self.n, self.seed, self.epoch) if self.shuffle else list(range(self.n))
        if self.world > 1:
            per = -(-self.n // self.world)
            order = (order * (1 + per * self.world // max(1, self.n)))[: per * self.world]
            order = order[self.rank :: self.world]
        return order

    def __iter__(self):
        return iter(self.indices())

    def __len__(self) -> int:
        return -(-self.n // self.world) if self.world > 1 else self.n


def split_items(root: Path, split: str) -> list[tuple[Path, int]]:
    items = labelled_images(split_dir(root, split))
    if not items:
        raise FileNotFoundError(f"{root}/{split}: no images under 0_real/1_fake folders")
    return items


def make_loader(ds: ImageDataset, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0,
                rank: int = 0, world: int = 1) -> DataLoader:
    sampler = EpochSampler(len(ds), seed=seed, shuffle=shuffle, rank=rank, world=world)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate,
                      drop_last=False, persistent_workers=False)


def calibration_batches(root: str | Path, preprocess: Preprocess, n: int = 256, batch_size: int = 32,
                        seed: int = 0, split: str = "train") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`n` training images (balanced random draw, centre-cropped) as a list of (x, y) batches, for PTQ/calibration."""
    return calibration_batches_from_items(split_items(Path(root), split), preprocess, n, batch_size, seed)


def calibration_batches_from_items(items: Sequence[tuple[Path, int]], preprocess: Preprocess, n: int = 256,
                                   batch_size: int = 32, seed: int = 0,
                                   skipped: dict[str, str] | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Up to `n` of `items` (a balanced random draw over labels 0/1; any other label counts as its own class),
    evaluation-transformed, as (x, y) batches of `batch_size`. Undecodable files are skipped (recorded in `skipped`
    when given); an image whose transformed shape differs from the first one's is left out so batches stack."""
    items = list(items)
    order = shuffled_order(len(items), seed, 0)
    real = [i for i in order if items[i][1] == 0]
    fake = [i for i in order if items[i][1] == 1]
    other = [i for i in order if items[i][1] not in (0, 1)]
    take: list[int] = []
    for a, b in zip(real, fake, strict=False):
        take += [a, b]
    take += real[len(fake):] + fake[len(real):] + other
    ds = ImageDataset([items[i] for i in take], single_crop(preprocess), train=False)  # one crop per image
    out, xs, ys = [], [], []
    for i in range(len(ds)):
        if len(xs) + sum(len(b[1]) for b in out) >= n:
            break
        s = ds[i]
        if s is None:
            continue
        x, y, _ = s
        if xs and x.shape != xs[0].shape:
            continue
        if not xs and out and x.shape != out[0][0].shape[1:]:
            continue
        xs.append(x)
        ys.append(y)
        if len(xs) == batch_size:
            out.append((torch.stack(xs), torch.tensor(ys, dtype=torch.float32)))
            xs, ys = [], []
    if xs:
        out.append((torch.stack(xs), torch.tensor(ys, dtype=torch.float32)))
    if skipped is not None:
        skipped.update(ds.skipped)
    return out
