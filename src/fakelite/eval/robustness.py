"""Robustness benchmark: Acc/AP/AUC of one or more detectors under image perturbations at several strengths.

Every perturbation is applied to the decoded uint8 RGB image *before* the model's own preprocessing (its centre
crop and normalisation), the way a photo is degraded before it reaches a detector. Definitions (x in 0–255):

- jpeg q:        Pillow JPEG round trip at quality q ∈ {95, 75, 50, 30}.
- blur σ:        Gaussian blur, std σ ∈ {0.5, 1, 2, 3} pixels (OpenCV, reflect-101 borders).
- rescale f:     resize by f ∈ {0.5, 0.75, 1.5, 2} (area filter down, bilinear up), then the model's centre crop
                 (an image smaller than the crop is kept whole).
- noise σ:       additive Gaussian noise, std σ ∈ {2, 5, 10, 20}, rounded and clipped.
- low_light b:   brightness b then gamma 2 − b: out = 255·(b·x/255)^(2−b), b ∈ {0.6, 0.4, 0.2} (darker to the right).
- occlusion p:   one grey (128) rectangle, the image's aspect ratio, covering p ∈ {10, 20, 30, 40} % of the area.
- wild:          combinations seen in the wild: resize 0.5× + JPEG 75, blur 1 + JPEG 75, noise 5 + JPEG 50,
                 low light 0.4 + noise 5, resize 0.75× + blur 1 + JPEG 50.

Random perturbations (noise, occlusion) draw from a generator seeded by (seed, perturbation, level, set name, file
name), so every model sees the same perturbed pixels and reruns give identical numbers.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fakelite.data.folders import ImageSet, discover_sets
from fakelite.data.io import BadInput, load_rgb, reason_category
from fakelite.data.transforms import (
    aggregate_logits,
    eval_tensors,
    gaussian_blur,
    gaussian_noise,
    jpeg,
    low_light_level,
    occlude,
    rescale,
)
from fakelite.utils.progress import progress_bar

from .metrics import binary_metrics
from .report import wide_console
from .roots import eval_root

log = logging.getLogger("fakelite.robustness")

Perturb = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Level:
    """One strength of one perturbation: `value` is plotted on the x axis, `label` names it in tables."""

    value: float | str
    label: str
    fn: Perturb


def _levels(values: Sequence[float], fmt: str, make: Callable[[float], Perturb]) -> list[Level]:
    return [Level(v, fmt.format(v), make(v)) for v in values]


def _chain(*fns: Perturb) -> Perturb:
    def run(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for f in fns:
            img = f(img, rng)
        return img

    return run


def _jpeg(q: float) -> Perturb:
    return lambda img, rng: jpeg(img, int(q))


def _blur(s: float) -> Perturb:
    return lambda img, rng: gaussian_blur(img, s)


def _rescale(f: float) -> Perturb:
    return lambda img, rng: rescale(img, f)


def _noise(s: float) -> Perturb:
    return lambda img, rng: gaussian_noise(img, s, rng)


def _dark(b: float) -> Perturb:
    return lambda img, rng: low_light_level(img, b)


def _occlude(p: float) -> Perturb:
    return lambda img, rng: occlude(img, p / 100.0, rng)


PERTURBATIONS: dict[str, list[Level]] = {
    "jpeg": _levels([95, 75, 50, 30], "q{:g}", _jpeg),
    "blur": _levels([0.5, 1, 2, 3], "σ{:g}", _blur),
    "rescale": _levels([0.5, 0.75, 1.5, 2], "{:g}×", _rescale),
    "noise": _levels([2, 5, 10, 20], "σ{:g}", _noise),
    "low_light": _levels([0.6, 0.4, 0.2], "b{:g}", _dark),
    "occlusion": _levels([10, 20, 30, 40], "{:g}%", _occlude),
    "wild": [
        # labels: × = rescale, σ = blur, n = noise σ, b = low-light brightness, q = JPEG quality
        Level("0.5×+q75", "0.5×+q75", _chain(_rescale(0.5), _jpeg(75))),
        Level("σ1+q75", "σ1+q75", _chain(_blur(1), _jpeg(75))),
        Level("n5+q50", "n5+q50", _chain(_noise(5), _jpeg(50))),
        Level("b0.4+n5", "b0.4+n5", _chain(_dark(0.4), _noise(5))),
        Level("0.75×+σ1+q50", "0.75×+σ1+q50", _chain(_rescale(0.75), _blur(1), _jpeg(50))),
    ],
}

X_LABELS = {"jpeg": "JPEG quality", "blur": "Gaussian blur σ (px)", "rescale": "scale factor",
            "noise": "noise σ (0–255)", "low_light": "brightness b (gamma 2−b)", "occlusion": "occluded area (%)",
            "wild": "combination (× rescale, σ blur, n noise, b brightness, q JPEG)"}


def resolve_data(root: str | Path) -> list[ImageSet]:
    """Test sets under `root`; a dataset root (holding `train/`) uses its `test/` and is refused without one
    (`fakelite.eval.roots.eval_root`)."""
    return discover_sets(eval_root(root)[0])


def subsample(sets: list[ImageSet], per_set: int, seed: int = 0) -> list[ImageSet]:
    """At most `per_set` items per set, balanced real/fake, deterministic (for --quick)."""
    out = []
    for s in sets:
        g = np.random.default_rng([seed, zlib.crc32(s.name.encode())])
        real = [it for it in s.items if it[1] == 0]
        fake = [it for it in s.items if it[1] == 1]
        half = per_set // 2
        pick_r = [real[i] for i in sorted(g.permutation(len(real))[: max(half, per_set - len(fake))])]
        pick_f = [fake[i] for i in sorted(g.permutation(len(fake))[: per_set - len(pick_r)])]
        out.append(ImageSet(s.name, pick_r + pick_f))
    return out


def _image_seed(seed: int, pert: str, level: int, set_name: str, path: Path) -> list[int]:
    return [seed, zlib.crc32(pert.encode()), level, zlib.crc32(set_name.encode()), zlib.crc32(path.name.encode())]


@torch.no_grad()
def _scores(model: nn.Module, images: list[np.ndarray], batch_size: int) -> np.ndarray:
    """sigmoid(logit / T) per image under the model's scoring policy (every crop of `eval_crops`, their logits
    combined by `aggregate_logits`); crops of different sizes are run in same-shape groups."""
    pre = model.preprocess
    per_image = [eval_tensors(img, pre) for img in images]
    xs = [c for cs in per_image for c in cs]
    z = np.zeros(len(xs), dtype=np.float32)
    by_shape: dict[tuple, list[int]] = {}
    for i, x in enumerate(xs):
        by_shape.setdefault(tuple(x.shape), []).append(i)
    for idx in by_shape.values():
        for k in range(0, len(idx), batch_size):
            chunk = idx[k : k + batch_size]
            z[chunk] = model(torch.stack([xs[i] for i in chunk])).float().view(-1).numpy()
    starts = np.cumsum([0] + [len(cs) for cs in per_image])
    logits = torch.tensor([aggregate_logits(z[a:b], pre) for a, b in zip(starts[:-1], starts[1:], strict=True)],
                          dtype=torch.float32)
    return torch.sigmoid(logits / float(getattr(model, "temperature", 1.0) or 1.0)).numpy().astype(np.float64)


def _summarise(per_set: dict[str, dict]) -> dict:
    keys = ("acc", "ap", "auc", "acc_at_threshold")
    mean = {}
    for k in keys:
        vals = [m[k] for m in per_set.values() if m.get(k) is not None]
        mean[k] = float(np.mean(vals)) if vals else None
    mean["n"] = int(sum(m["n"] for m in per_set.values()))
    return mean


def run_robustness(
    models: dict[str, nn.Module],
    sets: list[ImageSet],
    perturbations: Sequence[str] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    quiet: bool = False,
) -> dict:
    """Evaluate every model on clean and perturbed copies of `sets`.

    Returns {"models": [...], "perturbations": {name: {"levels": [...], "x_label"}}, "sets": [...],
    "n_images", "skipped": {path: reason}, "not_read": {reason: n}, "results": {model: {"clean": ROW, pert: [ROW per level]}}} where
    ROW = {"level", "label", "mean": {acc, ap, auc, acc_at_threshold, n}, "sets": {set: {same}}}; acc is at 0.5 (the
    field's convention), acc_at_threshold at the threshold stored with the model.
    """
    perts = list(perturbations or PERTURBATIONS)
    for p in perts:
        if p not in PERTURBATIONS:
            raise KeyError(f"unknown perturbation {p!r}; choose from {', '.join(PERTURBATIONS)}")
    for m in models.values():
        m.eval()

    # decode every image once (bad files are skipped, named and counted)
    decoded: list[tuple[str, list[tuple[Path, int, np.ndarray]]]] = []
    skipped: dict[str, str] = {}
    for s in sets:
        rows = []
        for path, label in s.items:
            try:
                rows.append((path, label, load_rgb(path)))
            except BadInput as e:
                log.warning("skipped %s", e)
                skipped[str(path)] = e.reason
        decoded.append((s.name, rows))

    conditions: list[tuple[str, int, Level | None]] = [("clean", 0, None)]
    conditions += [(p, i, lv) for p in perts for i, lv in enumerate(PERTURBATIONS[p])]
    results: dict[str, dict] = {name: {} for name in models}
    total = len(conditions) * len(decoded)
    with progress_bar("robustness", total, quiet=quiet) as advance:
        for pert, li, lv in conditions:
            per_model_sets: dict[str, dict[str, dict]] = {name: {} for name in models}
            for set_name, rows in decoded:
                if lv is None:
                    imgs = [img for _, _, img in rows]
                else:
                    imgs = [lv.fn(img, np.random.default_rng(_image_seed(seed, pert, li, set_name, path)))
                            for path, _, img in rows]
                labels = np.array([y for _, y, _ in rows], dtype=np.int64)
                for name, model in models.items():
                    scores = _scores(model, imgs, batch_size) if imgs else np.zeros(0)
                    m = binary_metrics(labels, scores, 0.5)
                    row = {k: m[k] for k in ("acc", "ap", "auc", "n")}
                    row["acc_at_threshold"] = binary_metrics(labels, scores, float(getattr(model, "threshold", 0.5)))["acc"]
                    per_model_sets[name][set_name] = row
                advance(1)
            for name in models:
                row = {"level": None if lv is None else lv.value, "label": "clean" if lv is None else lv.label,
                       "mean": _summarise(per_model_sets[name]), "sets": per_model_sets[name]}
                if lv is None:
                    results[name]["clean"] = row
                else:
                    results[name].setdefault(pert, []).append(row)
    return {
        "models": list(models),
        "perturbations": {p: {"levels": [lv.value for lv in PERTURBATIONS[p]],
                              "labels": [lv.label for lv in PERTURBATIONS[p]], "x_label": X_LABELS[p]}
                          for p in perts},
        "sets": [name for name, _ in decoded],
        "n_images": int(sum(len(r) for _, r in decoded)),
        "skipped": skipped,
        "not_read": _not_read(sets, skipped),
        "seed": seed,
        "results": results,
    }


def _not_read(sets, skipped: dict[str, str]) -> dict[str, int]:
    """{reason: count} of every file under the sets not scored: left out by the folder walk or failed to decode."""
    out: dict[str, int] = {}
    for s in sets:
        for k, v in getattr(s, "not_read", {}).items():
            out[k] = out.get(k, 0) + v
    for reason in skipped.values():
        k = reason_category(reason)
        out[k] = out.get(k, 0) + 1
    return out


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def markdown(res: dict, title: str = "Robustness") -> str:
    """One table per perturbation: rows = strengths (clean first), columns = AUC / AP / Acc per model (mean over
    test sets), then a per-set AUC table."""
    models = res["models"]
    lines = [f"# {title}", ""]
    if res.get("command"):
        lines += [f"Command: `{res['command']}`", ""]
    lines += [f"{res['n_images']} images in {len(res['sets'])} test set(s) ({', '.join(res['sets'])}); "
              f"{len(res['skipped'])} skipped; seed {res['seed']}. Metrics in %, mean over the test sets; "
              "Acc at threshold 0.5.", ""]
    for pert, info in res["perturbations"].items():
        lines += [f"## {pert} ({info['x_label']})", ""]
        head = "| level | " + " | ".join(f"{m} AUC | {m} AP | {m} Acc" for m in models) + " |"
        lines += [head, "|---|" + "---|" * (3 * len(models))]
        for li in range(-1, len(info["levels"])):
            label = "clean" if li < 0 else info["labels"][li]
            cells = []
            for m in models:
                row = res["results"][m]["clean"] if li < 0 else res["results"][m][pert][li]
                cells += [_pct(row["mean"]["auc"]), _pct(row["mean"]["ap"]), _pct(row["mean"]["acc"])]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    if len(res["sets"]) > 1:
        lines += ["## AUC per test set", ""]
        for m in models:
            lines += [f"### {m}", "", "| perturbation | level | " + " | ".join(res["sets"]) + " |",
                      "|---|---|" + "---|" * len(res["sets"])]
            rows = [("clean", res["results"][m]["clean"])]
            rows += [(p, r) for p in res["perturbations"] for r in res["results"][m][p]]
            for p, r in rows:
                lines.append(f"| {p} | {r['label']} | " + " | ".join(_pct(r["sets"][s]["auc"]) for s in res["sets"]) + " |")
            lines.append("")
    return "\n".join(lines)


def print_table(res: dict) -> None:
    """Compact terminal summary: mean AUC (and Acc) per perturbation level and model."""
    from rich.table import Table

    t = Table(title="robustness (mean over test sets, %)")
    t.add_column("perturbation")
    t.add_column("level")
    for m in res["models"]:
        t.add_column(f"{m} AUC", justify="right")
        t.add_column(f"{m} Acc", justify="right")
    rows = [("clean", "–", [res["results"][m]["clean"] for m in res["models"]])]
    for p, info in res["perturbations"].items():
        for li, label in enumerate(info["labels"]):
            rows.append((p, label, [res["results"][m][p][li] for m in res["models"]]))
    for p, label, rs in rows:
        cells = []
        for r in rs:
            cells += [_pct(r["mean"]["auc"]), _pct(r["mean"]["acc"])]
        t.add_row(p, label, *cells)
    wide_console().print(t)


def plot(res: dict, out_dir: str | Path) -> list[Path]:
    """One PNG per perturbation: x = strength (clean first), AUC solid and Acc dashed, one colour per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for pert, info in res["perturbations"].items():
        labels = ["clean"] + [str(v) if not isinstance(v, float) else f"{v:g}" for v in info["levels"]]
        x = np.arange(len(labels))
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
        for k, m in enumerate(res["models"]):
            rows = [res["results"][m]["clean"]] + res["results"][m][pert]
            auc = [np.nan if r["mean"]["auc"] is None else 100 * r["mean"]["auc"] for r in rows]
            acc = [np.nan if r["mean"]["acc"] is None else 100 * r["mean"]["acc"] for r in rows]
            c = colors[k % len(colors)]
            ax.plot(x, auc, "-o", color=c, label=f"{m} AUC")
            ax.plot(x, acc, "--s", color=c, alpha=0.8, markersize=4, label=f"{m} Acc")
        ax.set_xticks(x, labels, rotation=20 if pert == "wild" else 0, fontsize=8 if pert == "wild" else 10)
        ax.set_xlabel(info["x_label"])
        ax.set_ylabel("% (mean over test sets)")
        ax.set_ylim(0, 102)
        ax.axhline(50, color="grey", lw=0.6, ls=":")
        ax.grid(alpha=0.3)
        ax.set_title(f"Robustness to {pert.replace('_', ' ')}")
        ax.legend(fontsize=8, loc="lower left")
        fig.tight_layout()
        p = out_dir / f"robustness_{pert}.png"
        fig.savefig(p)
        plt.close(fig)
        written.append(p)
    return written


def write(res: dict, out_dir: str | Path, title: str = "Robustness") -> list[Path]:
    """robustness.json, robustness.md and the per-perturbation PNGs in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "robustness.json").write_text(json.dumps(res, indent=2, ensure_ascii=False))
    (out_dir / "robustness.md").write_text(markdown(res, title) + "\n")
    return [out_dir / "robustness.json", out_dir / "robustness.md", *plot(res, out_dir)]
