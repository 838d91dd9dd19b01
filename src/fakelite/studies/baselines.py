"""Classical baselines (the seed paper's Table III): the SVM, decision tree and random forest of
fakelite/models/classical.py trained on DATA/train and scored on every test set (Acc/AP/AUC) and on the training
set (train Acc), beside any .fakelite CNN detectors given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fakelite.artifact import load
from fakelite.compress.measure import eval_means
from fakelite.data.dataset import ImageDataset, split_items
from fakelite.data.folders import discover_sets
from fakelite.eval.evaluate import predict_dataset
from fakelite.eval.metrics import binary_metrics, mean_metrics
from fakelite.models.classical import FEATURE_GROUPS, classifier_scores, extract, make_classifiers


def _metrics(y: np.ndarray, s: np.ndarray) -> dict:
    return binary_metrics(y, s, 0.5)


def run_baselines(data: str | Path, *, crop: int = 256, cnn_models: list[str | Path] | None = None,
                  max_train: int | None = 4000, seed: int = 0, quiet: bool = True) -> dict[str, Any]:
    """Train the classical baselines on DATA/train, evaluate on every set under DATA/test (or DATA/val when there
    is no test/), and evaluate the given CNN .fakelite models on the same images.

    Returns {"features": {...}, "methods": {name: {"train_acc", "sets": {set: metrics}, "mean": metrics}}}.
    """
    data = Path(data)
    train_items = split_items(data, "train")
    if max_train and len(train_items) > max_train:
        pick = np.random.default_rng(seed).choice(len(train_items), max_train, replace=False)
        train_items = [train_items[i] for i in sorted(pick)]
    test_root = data / "test" if (data / "test").is_dir() else data / "val"
    sets = discover_sets(test_root)
    Xtr, ytr, skipped_train = extract(train_items, crop)
    if len(np.unique(ytr)) < 2:
        raise ValueError(f"{data}/train: baselines need both real and fake training images")
    test_feats = {s.name: extract(s.items, crop) for s in sets}
    result: dict[str, Any] = {"data": str(data), "train_images": int(len(ytr)), "skipped_train": len(skipped_train),
                              "features": {"groups": FEATURE_GROUPS, "dim": int(Xtr.shape[1]), "crop": crop},
                              "methods": {}}
    for name, clf in make_classifiers(seed).items():
        clf.fit(Xtr, ytr)
        row: dict[str, Any] = {"kind": "classical", "train_acc": float((clf.predict(Xtr) == ytr).mean()), "sets": {}}
        for sname, (X, y, sk) in test_feats.items():
            s = classifier_scores(clf, X) if len(y) else np.zeros(0)
            m = _metrics(y, s)
            m["skipped"] = len(sk)
            row["sets"][sname] = m
        row["mean"] = mean_metrics(list(row["sets"].values()))
        result["methods"][name] = row
    for path in cnn_models or []:
        model = load(path)
        res = eval_means(model, test_root)
        scores, labels, _ = predict_dataset(model, ImageDataset(train_items, model.preprocess, train=False,
                                                                cache=False))
        name = f"CNN {Path(path).parent.name}/{Path(path).name}" if Path(path).parent.name else f"CNN {path}"
        result["methods"][name] = {"kind": "cnn", "arch": model.arch_name,
                                   "train_acc": _metrics(labels, scores)["acc"] if len(labels) else None,
                                   "sets": res["sets"], "mean": res["mean"]}
    return result


def baselines_markdown(result: dict[str, Any]) -> str:
    """Table III shape, extended: train Acc, then test Acc/AP/AUC per set and mean."""
    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f}"

    methods = result["methods"]
    sets = list(next(iter(methods.values()))["sets"])
    head = "| Model | train Acc | " + " | ".join(f"{s} Acc/AUC" for s in sets) + " | mean Acc | mean AP | mean AUC |"
    lines = [head, "|---|---|" + "---|" * (len(sets) + 3)]
    for name, r in methods.items():
        cells = [f"{pct(r['sets'][s]['acc'])}/{pct(r['sets'][s]['auc'])}" if s in r["sets"] else "–" for s in sets]
        m = r["mean"]
        lines.append(f"| {name} | {pct(r['train_acc'])} | " + " | ".join(cells)
                     + f" | {pct(m['acc'])} | {pct(m['ap'])} | {pct(m['auc'])} |")
    return "\n".join(lines)
