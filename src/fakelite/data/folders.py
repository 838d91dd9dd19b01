"""Dataset layout discovery for the field's folder conventions (label 0 = `0_real`, 1 = `1_fake`).

- A *leaf set* is a folder with `0_real` and/or `1_fake` children (flat layout, UniversalFakeDetect, FaceSynth).
- A *grouped set* holds per-class subfolders that are leaf sets (ForenSynths: `test/progan/airplane/0_real`); its
  classes are merged into one set.
- Under a root, every folder that holds a set is one test set named by its path relative to the root.
  Below the root, a folder whose set-holding children are all leaf sets is a grouped set. At the root itself that
  reading is ambiguous (`test/` of FaceSynth holds one leaf set per generator; `test/progan` holds one per LSUN
  class): the root is merged into one set only when its children are known ForenSynths/LSUN class names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .io import IMAGE_EXTS
from .walk import Walk, iter_dirs, walk_files

REAL, FAKE = "0_real", "1_fake"
LABEL_DIRS = {REAL: 0, FAKE: 1}

# Class folders used by ForenSynths/CNNDetection (the 20 LSUN categories and the GAN-specific ones).
CLASS_NAMES = {
    "airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
    "bedroom", "church", "church_outdoor", "apple", "orange", "summer", "winter", "zebra", "facades",
    "cityscapes", "map", "ukiyoe", "vangogh", "cezanne", "monet", "photo", "person_female", "person_male",
}


@dataclass
class ImageSet:
    """A named set of labelled image files."""

    name: str
    items: list[tuple[Path, int]] = field(default_factory=list)
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of files the walk did not take

    @property
    def not_read(self) -> dict[str, int]:
        """{reason: count} of the files under the set's label folders that are not read (see data/walk.py)."""
        return Walk(left_out=self.left_out).not_read

    @property
    def n_real(self) -> int:
        return sum(1 for _, y in self.items if y == 0)

    @property
    def n_fake(self) -> int:
        return len(self.items) - self.n_real


def _subdirs(d: Path, chain: frozenset[str] = frozenset()) -> list[Path]:
    """Child folders of `d` (symlinks followed), minus hidden ones and any that lead back onto `chain` (the real
    paths of `d` and the folders above it in this descent): a symlink cycle is never entered."""
    here = chain | {os.path.realpath(d)}
    try:
        kids = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    return [c for c in kids if os.path.realpath(c) not in here]


def _chain(d: Path, chain: frozenset[str]) -> frozenset[str]:
    return chain | {os.path.realpath(d)}


def is_leaf_set(d: Path) -> bool:
    return (d / REAL).is_dir() or (d / FAKE).is_dir()


def _holds_set(d: Path, chain: frozenset[str] = frozenset()) -> bool:
    if is_leaf_set(d):
        return True
    here = _chain(d, chain)
    return any(_holds_set(c, here) for c in _subdirs(d, here))


def list_images(d: Path) -> list[Path]:
    """All image files under `d` (recursive, following symlinked folders once each), sorted for determinism."""
    return walk_files([d], IMAGE_EXTS).files


def labelled_walk(d: Path) -> tuple[list[tuple[Path, int]], list[tuple[str, str]]]:
    """(items, left_out): every image below `d` that sits under a `0_real` or `1_fake` folder, with its label,
    and the (path, reason) of every file under those folders that is not read."""
    items: list[tuple[Path, int]] = []
    left: list[tuple[str, str]] = []
    label_dirs = []
    for root in iter_dirs(d):
        if root.name in LABEL_DIRS and not any(a in root.parents for a in label_dirs):
            label_dirs.append(root)
    for root in label_dirs:
        w = walk_files([root], IMAGE_EXTS)
        items.extend((p, LABEL_DIRS[root.name]) for p in w.files)
        left.extend(w.left_out)
    return items, left


def labelled_images(d: Path) -> list[tuple[Path, int]]:
    """Every image below `d` that sits under a `0_real` or `1_fake` folder, with its label."""
    return labelled_walk(d)[0]


def _collect(d: Path, root: Path, out: list[ImageSet], chain: frozenset[str] = frozenset()) -> None:
    rel = d.relative_to(root).as_posix() if d != root else (root.name or ".")
    if is_leaf_set(d):
        out.append(ImageSet(rel, *labelled_walk(d)))
        return
    here = _chain(d, chain)
    children = [c for c in _subdirs(d, here) if _holds_set(c, here)]
    if not children:
        return
    all_leaves = all(is_leaf_set(c) for c in children)
    grouped = all_leaves and (d != root or all(c.name.lower() in CLASS_NAMES for c in children))
    if grouped:
        out.append(ImageSet(rel, *labelled_walk(d)))
        return
    for c in children:
        _collect(c, root, out, here)


def discover_sets(root: str | os.PathLike) -> list[ImageSet]:
    """Find every test set under `root` (see module docstring for the rules)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such data folder")
    out: list[ImageSet] = []
    _collect(root, root, out)
    if not out:
        raise FileNotFoundError(f"{root}: no 0_real/1_fake folders found (see README: dataset layouts)")
    return out


def split_dir(root: str | os.PathLike, split: str) -> Path:
    """`root/split` if it exists (ForenSynths/FaceSynth layout), else raise a clear error."""
    d = Path(root) / split
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: missing '{split}' folder (expected {root}/{split}/[<class>/]{{0_real,1_fake}})")
    return d
