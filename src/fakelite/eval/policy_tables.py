"""Per-family × per-policy tables for several models at once (the real-media issue's closing tables).

Each image is decoded once; every model scores it under every scoring policy (``POLICY_VARIANTS``: the field's
``center`` and ``resize256``, and ``tiles`` with mean / max / top-3 aggregation, as in
``fakelite.data.transforms.eval_crops`` and ``aggregate_logits``). The tiles of one image are scored once and
aggregated three ways. Per (model, policy, set) the table gives AUC and TPR at a target FPR read on that set's own
ROC curve (``fakelite.eval.calibration.tpr_at_fpr``), and, for the policy stored in each model, the FPR and TPR at
the model's shipped threshold (``rates_at_threshold``).

Used by ``fakelite demo`` (on a WildSynth test sample) and ``benchmarks/wild_tables.py`` (the whole test split).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np
import torch
from rich.table import Table
from torch import nn

from fakelite.data.folders import ImageSet
from fakelite.data.io import BadInput, load_rgb
from fakelite.data.preprocess import Preprocess
from fakelite.data.transforms import aggregate_logits, eval_crops, to_tensor
from fakelite.eval.calibration import DEFAULT_TARGET_FPR, rates_at_threshold, tpr_at_fpr
from fakelite.eval.metrics import binary_metrics

#: Scoring policies compared, by table name → Preprocess fields.
POLICY_VARIANTS: dict[str, dict] = {
    "center": {"policy": "center"},
    "resize256": {"policy": "resize256"},
    "tiles-mean": {"policy": "tiles", "aggregate": "mean"},
    "tiles-max": {"policy": "tiles", "aggregate": "max"},
    "tiles-top3": {"policy": "tiles", "aggregate": "topk", "topk": 3},
}


def policy_name(pre: Preprocess) -> str:
    """The POLICY_VARIANTS name of a model's stored policy (e.g. "tiles-mean")."""
    if pre.policy != "tiles":
        return pre.policy
    return "tiles-top3" if pre.aggregate == "topk" else f"tiles-{pre.aggregate}"


@torch.no_grad()
def _image_logits(model: nn.Module, img: np.ndarray, variants: Mapping[str, dict]) -> dict[str, float]:
    """One aggregated logit per policy variant for one image (tiles scored once, aggregated per variant)."""
    base: Preprocess = model.preprocess
    by_crops: dict[tuple, list[str]] = {}
    for name, fields in variants.items():
        pre = replace(base, **fields)
        by_crops.setdefault((pre.policy, pre.crop, pre.max_tiles), []).append(name)
    out: dict[str, float] = {}
    for names in by_crops.values():
        pre = replace(base, **variants[names[0]])
        x = torch.stack([to_tensor(c, pre) for c in eval_crops(img, pre)])
        z = model(x).float().view(-1).numpy()
        for name in names:
            out[name] = aggregate_logits(z, replace(base, **variants[name]))
    return out


def score_sets(models: Mapping[str, nn.Module], sets: Sequence[ImageSet],
               variants: Mapping[str, dict] = POLICY_VARIANTS,
               advance: Callable[[int], None] | None = None) -> dict:
    """Logits of every model under every policy variant on every set.

    Returns ``{"labels": {set: int array (n,)}, "logits": {model: {variant: {set: float array (n,)}}},
    "skipped": {set: {path: reason}}}``; an undecodable file is skipped for every model alike. Models must be in
    eval mode on the CPU and carry a ``preprocess`` (as every fakelite model does)."""
    for m in models.values():
        m.eval()
    labels: dict[str, np.ndarray] = {}
    logits: dict = {mn: {v: {} for v in variants} for mn in models}
    skipped: dict[str, dict[str, str]] = {}
    for s in sets:
        ys: list[int] = []
        rows: dict = {mn: {v: [] for v in variants} for mn in models}
        skipped[s.name] = {}
        for path, label in s.items:
            try:
                img = load_rgb(path)
            except BadInput as e:
                skipped[s.name][str(path)] = str(e)
                if advance:
                    advance(1)
                continue
            ys.append(int(label))
            for mn, m in models.items():
                for v, z in _image_logits(m, img, variants).items():
                    rows[mn][v].append(z)
            if advance:
                advance(1)
        labels[s.name] = np.asarray(ys, dtype=np.int64)
        for mn in models:
            for v in variants:
                logits[mn][v][s.name] = np.asarray(rows[mn][v], dtype=np.float64)
    return {"labels": labels, "logits": logits, "skipped": skipped}


def summarize(scores: dict, models: Mapping[str, nn.Module], target_fpr: float = DEFAULT_TARGET_FPR) -> dict:
    """``{model: {variant: {set: {"auc", "tpr_at_fpr", "n", ["fpr_at_threshold", "tpr_at_threshold"]}}}}`` plus a
    ``"mean"`` pseudo-set per variant (unweighted over sets). The stored threshold (a probability of
    sigmoid(logit / temperature)) is applied only under the model's stored policy, where it was chosen."""
    out: dict = {}
    for mn, m in models.items():
        stored = policy_name(m.preprocess)
        thr = float(getattr(m, "threshold", 0.5) or 0.5)
        temp = float(getattr(m, "temperature", 1.0) or 1.0)
        out[mn] = {}
        for v, per_set in scores["logits"][mn].items():
            rows: dict = {}
            for sname, z in per_set.items():
                y = scores["labels"][sname]
                p = torch.sigmoid(torch.from_numpy(z) / temp).numpy()  # as predict_dataset scores
                r = {"auc": binary_metrics(y, p)["auc"], "tpr_at_fpr": tpr_at_fpr(y, p, target_fpr), "n": int(len(y))}
                if v == stored:
                    r["fpr_at_threshold"], r["tpr_at_threshold"] = rates_at_threshold(y, p, thr)
                rows[sname] = r
            keys = {k for r in rows.values() for k in r if k != "n"}
            rows["mean"] = {k: _mean([r.get(k) for r in rows.values()]) for k in sorted(keys)}
            rows["mean"]["n"] = int(sum(r["n"] for r in rows.values() if "n" in r))
            out[mn][v] = rows
    return out


def _mean(vals: list) -> float | None:
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def _cell(r: dict) -> str:
    auc, tpr = r.get("auc"), r.get("tpr_at_fpr")
    return f"{auc:.3f} / {tpr:.2f}" if auc is not None and tpr is not None else "–"


def family_table(summary: dict, variant: str, sets: Sequence[str], title: str = "",
                 heldout: Sequence[str] = ()) -> Table:
    """Rows = models, columns = sets (+ mean): "AUC / TPR@FPR" under one policy variant. Held-out set names get a
    ``*``."""
    t = Table(title=title or f"policy {variant}: AUC / TPR at the target FPR")
    t.add_column("model")
    for s in (*sets, "mean"):
        t.add_column(f"{s}*" if s in heldout else s, justify="right")
    for mn, per_variant in summary.items():
        rows = per_variant[variant]
        t.add_row(mn, *(_cell(rows[s]) for s in (*sets, "mean")))
    return t


def policy_table(summary: dict, sets: Sequence[str], title: str = "") -> Table:
    """Rows = models × policies, columns: mean AUC, mean TPR@FPR over ``sets``, and (stored policy only) the mean
    FPR / TPR at the shipped threshold."""
    t = Table(title=title or "scoring policies: mean over the sets")
    for c in ("model", "policy", "AUC", "TPR@FPR", "FPR@thr", "TPR@thr"):
        t.add_column(c, justify="left" if c in ("model", "policy") else "right")
    for mn, per_variant in summary.items():
        for v, rows in per_variant.items():
            m = {k: _mean([rows[s].get(k) for s in sets]) for k in
                 ("auc", "tpr_at_fpr", "fpr_at_threshold", "tpr_at_threshold")}
            t.add_row(mn, v, *("" if m[k] is None else f"{m[k]:.3f}" for k in
                               ("auc", "tpr_at_fpr", "fpr_at_threshold", "tpr_at_threshold")))
    return t


def markdown(summary: dict, variant: str, sets: Sequence[str], heldout: Sequence[str] = ()) -> str:
    """The family table of one policy variant as Markdown (for docs)."""
    cols = [*sets, "mean"]
    head = "| model | " + " | ".join(f"{s}*" if s in heldout else s for s in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]
    for mn, per_variant in summary.items():
        lines.append(f"| {mn} | " + " | ".join(_cell(per_variant[variant][s]) for s in cols) + " |")
    return "\n".join(lines)
