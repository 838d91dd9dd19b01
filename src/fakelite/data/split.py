"""Split a flat real/fake folder into train/val/test: deterministic, stratified, without near-duplicate leakage.

Input: `SRC/{0_real,1_fake}` or `SRC/{real,fake}` (images directly inside, or in per-video subfolders).
Output: `OUT/{train,val,test}/{0_real,1_fake}/...` (copies, or hard links with `link=True`) and `OUT/split.json`.

Grouping rule (no leakage): all frames and crops of one source land in the same split. The *group key* of a file is
- the first subfolder below the class folder, when there is one (`0_real/video12/0001.png` → `video12`);
- otherwise its file-name stem with frame/crop suffixes stripped, repeatedly, case-insensitively: a trailing
  `[_-. ]` + (`frame` | `frm` | `f` | `face` | `crop` | `img` | `idx` | nothing) + digits, e.g.
  `clip07_0001` → `clip07`, `clip07-frame12` → `clip07`, `clip07_0003_face0` → `clip07`, `id3_f12_face1` → `id3`.
  A stem that is only digits (`000123`) is its own group (nothing is stripped from it).
The key is shared across classes, so a fake made from source `clip07` goes with the real `clip07`.
When grouping collapses the data into fewer groups than there are splits, `split_folder` refuses (use
`group=False`, which makes every file its own group).

Assignment: groups are shuffled with `seed`, sorted by size (largest first, stable), and each goes to the split
whose per-class deficit against the target ratios is largest — greedy stratification that keeps the real/fake
proportions of every split within one group of the target.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .folders import list_images

SPLITS = ("train", "val", "test")
CLASS_DIRS = {"0_real": 0, "1_fake": 1, "real": 0, "fake": 1}
OUT_CLASS = {0: "0_real", 1: "1_fake"}
_SUFFIX = re.compile(r"[_\-. ](?:frame|frm|f|face|crop|img|idx)?\d+$", re.IGNORECASE)


def group_key(stem: str) -> str:
    """Strip frame/crop suffixes from a file-name stem (see module docstring)."""
    key = stem
    while True:
        new = _SUFFIX.sub("", key)
        if new == key or not new:
            return key.lower()
        key = new


def parse_ratios(text: str) -> tuple[float, float, float]:
    """'70/15/15' (or '0.7,0.15,0.15') → fractions summing to 1."""
    parts = [p for p in re.split(r"[/,:\s]+", text.strip()) if p]
    if len(parts) != 3:
        raise ValueError(f"--ratios needs three numbers train/val/test, e.g. 70/15/15 (got {text!r})")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"--ratios: {text!r} is not three numbers") from None
    if any(v < 0 for v in vals) or sum(vals) <= 0:
        raise ValueError(f"--ratios: {text!r} must be non-negative with a positive sum")
    s = sum(vals)
    return vals[0] / s, vals[1] / s, vals[2] / s


@dataclass
class Item:
    path: Path
    label: int
    rel: Path  # path below the class folder
    group: str


def collect(src: str | os.PathLike, group: bool = True) -> list[Item]:
    """Labelled images under SRC/{0_real,1_fake} (or real/fake) with their group keys."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such folder")
    class_dirs = [(src / n, y) for n, y in CLASS_DIRS.items() if (src / n).is_dir()]
    if not class_dirs:
        raise FileNotFoundError(f"{src}: expected 0_real/ and 1_fake/ (or real/ and fake/) subfolders")
    labels = [y for _, y in class_dirs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"{src}: has both 0_real/ and real/ (or 1_fake/ and fake/): keep one naming")
    items: list[Item] = []
    for d, y in class_dirs:
        for p in list_images(d):
            rel = p.relative_to(d)
            if not group:
                key = f"{OUT_CLASS[y]}/{rel.as_posix()}"
            elif len(rel.parts) > 1:
                key = rel.parts[0].lower()
            else:
                key = group_key(p.stem)
            items.append(Item(p, y, rel, key))
    if not items:
        raise FileNotFoundError(f"{src}: no images in the class folders")
    return items


def assign_groups(items: list[Item], ratios: tuple[float, float, float], seed: int = 0) -> dict[str, str]:
    """group key → split name (see module docstring: greedy per-class stratification)."""
    counts: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(2))
    for it in items:
        counts[it.group][it.label] += 1
    keys = sorted(counts)
    rng = np.random.default_rng(seed)
    keys = [keys[i] for i in rng.permutation(len(keys))]
    keys.sort(key=lambda k: -counts[k].sum())  # stable: ties keep the seeded order
    totals = sum(counts.values())
    target = np.outer(np.asarray(ratios), totals)  # (3 splits, 2 classes)
    have = np.zeros((3, 2))
    out: dict[str, str] = {}
    active = [i for i, r in enumerate(ratios) if r > 0]
    for k in keys:
        c = counts[k]
        # fill the split with the largest relative deficit on the classes this group carries
        deficit = [((target[i] - have[i]) * c / np.maximum(totals, 1)).sum() / max(ratios[i], 1e-9)
                   for i in active]
        best = active[int(np.argmax(deficit))]
        have[best] += c
        out[k] = SPLITS[best]
    return out


def split_folder(src: str | os.PathLike, out: str | os.PathLike, ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
                 *, seed: int = 0, link: bool = False, group: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Split SRC into OUT/{train,val,test}/{0_real,1_fake}; returns (and writes OUT/split.json) the summary."""
    src, out = Path(src), Path(out)
    items = collect(src, group)
    n_groups = len({it.group for it in items})
    n_needed = sum(1 for r in ratios if r > 0)
    if n_groups < n_needed:
        raise ValueError(f"{src}: file names collapse into {n_groups} source group(s), fewer than the {n_needed} "
                         "splits; rename the files or split with --no-group")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty (choose a new --out)")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ValueError(f"{out}: must not be inside the source folder {src}")
    where = assign_groups(items, ratios, seed)
    summary: dict[str, Any] = {"src": str(src), "ratios": list(ratios), "seed": seed, "grouped": group,
                               "groups": n_groups, "link": link, "splits": {}}
    for s in SPLITS:
        summary["splits"][s] = {"real": 0, "fake": 0, "groups": 0}
    for s in where.values():
        summary["splits"][s]["groups"] += 1
    for it in items:
        s = where[it.group]
        dst = out / s / OUT_CLASS[it.label] / it.rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            dst.unlink()
        if link:
            try:
                os.link(it.path, dst)
            except OSError:
                shutil.copy2(it.path, dst)
        else:
            shutil.copy2(it.path, dst)
        summary["splits"][s]["fake" if it.label else "real"] += 1
    summary["assignment"] = dict(sorted(where.items()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "split.json").write_text(json.dumps(summary, indent=2))
    return summary
