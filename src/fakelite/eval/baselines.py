"""Classical baselines (the seed paper's Table III): SVM, decision tree and random forest on handcrafted features.

Features (one vector per image, computed on the centre crop of at most `crop`×`crop` pixels, even sides):
- NPR residual statistics (the up-sampling trace): NPR = x − x[2⌊i/2⌋, 2⌊j/2⌋] per RGB channel; mean |NPR| at the
  three non-anchor positions of the 2×2 cell (the anchor is 0 by definition), plus variance and excess kurtosis
  of NPR over the non-anchor positions → 3·3 + 3 + 3 = 15 values;
- azimuthally averaged FFT power spectrum of the grey image: `fft_bins` bins of log power over radius 0..√2·N/2
  (spectral peaks of up-samplers live at high radii) → 32 values;
- colour statistics: per-channel mean and std of RGB, mean and std of HSV saturation → 8 values.
Classifiers (scikit-learn): RBF SVM on standardised features (score σ(decision function)), decision tree (depth ≤ 8),
random forest (200 trees). Each is trained on DATA/train and scored on every test set (Acc/AP/AUC) and on the
training set (train Acc), beside any .fakelite CNN detectors given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fakelite.data.transforms import npr_image

FEATURE_GROUPS = {"npr": 15, "fft": 32, "color": 8}


def _center_crop_even(img: np.ndarray, crop: int) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = min(crop, h), min(crop, w)
    ch, cw = ch - ch % 2, cw - cw % 2
    y, x = (h - ch) // 2, (w - cw) // 2
    return img[y : y + ch, x : x + cw]


def npr_features(img: np.ndarray) -> np.ndarray:
    """15 NPR statistics of an even-sized HxWx3 uint8 image (see module docstring)."""
    r = npr_image(img) / 255.0
    feats = []
    for dy, dx in ((0, 1), (1, 0), (1, 1)):
        feats.extend(np.abs(r[dy::2, dx::2]).mean(axis=(0, 1)))
    mask = np.ones(r.shape[:2], dtype=bool)
    mask[::2, ::2] = False
    vals = r[mask]  # (n, 3)
    var = vals.var(axis=0)
    m4 = ((vals - vals.mean(axis=0)) ** 4).mean(axis=0)
    kurt = m4 / np.maximum(var**2, 1e-12) - 3.0
    feats.extend(var)
    feats.extend(np.clip(kurt, -10, 1e3))
    return np.asarray(feats, dtype=np.float64)


def fft_features(img: np.ndarray, bins: int = 32) -> np.ndarray:
    """Azimuthally averaged log power spectrum of the grey image (`bins` radial bins)."""
    g = img.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    g = g - g.mean()
    p = np.abs(np.fft.fftshift(np.fft.fft2(g))) ** 2
    h, w = p.shape
    yy, xx = np.indices(p.shape)
    r = np.hypot((yy - h // 2) / (h / 2), (xx - w // 2) / (w / 2)) / np.sqrt(2)  # 0..1
    idx = np.minimum((r * bins).astype(int), bins - 1)
    sums = np.bincount(idx.ravel(), weights=p.ravel(), minlength=bins)
    counts = np.bincount(idx.ravel(), minlength=bins)
    return np.log1p(sums / np.maximum(counts, 1))


def color_features(img: np.ndarray) -> np.ndarray:
    """Per-channel RGB mean/std and HSV saturation mean/std (8 values, in [0, 1] units)."""
    x = img.astype(np.float64) / 255.0
    mx, mn = x.max(axis=2), x.min(axis=2)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-12), 0.0)
    return np.concatenate([x.mean(axis=(0, 1)), x.std(axis=(0, 1)), [sat.mean(), sat.std()]])


def image_features(img: np.ndarray, crop: int = 256, fft_bins: int = 32) -> np.ndarray:
    """The full feature vector of one HxWx3 uint8 image."""
    img = _center_crop_even(img, crop)
    return np.concatenate([npr_features(img), fft_features(img, fft_bins), color_features(img)])


def feature_names(fft_bins: int = 32) -> list[str]:
    names = [f"npr_abs_{pos}_{c}" for pos in ("01", "10", "11") for c in "rgb"]
    names += [f"npr_var_{c}" for c in "rgb"] + [f"npr_kurt_{c}" for c in "rgb"]
    names += [f"fft_{i}" for i in range(fft_bins)]
    names += [f"mean_{c}" for c in "rgb"] + [f"std_{c}" for c in "rgb"] + ["sat_mean", "sat_std"]
    return names


def extract(items: list[tuple[Path, int]], crop: int = 256) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Features and labels of labelled image files; unreadable files are skipped and returned with the reason."""
    from fakelite.data.io import BadInput, load_rgb

    xs, ys, skipped = [], [], {}
    for p, y in items:
        try:
            img = load_rgb(p)
        except BadInput as e:
            skipped[str(p)] = e.reason
            continue
        if min(img.shape[:2]) < 4:
            skipped[str(p)] = "image smaller than 4×4"
            continue
        xs.append(image_features(img, crop))
        ys.append(y)
    if not xs:
        return np.zeros((0, sum(FEATURE_GROUPS.values()))), np.zeros(0), skipped
    return np.stack(xs), np.asarray(ys, dtype=np.int64), skipped


def make_classifiers(seed: int = 0) -> dict[str, Any]:
    """The three classical baselines (scikit-learn estimators)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    return {
        "SVM (RBF)": make_pipeline(StandardScaler(), SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed)),
        "Decision tree": DecisionTreeClassifier(max_depth=8, random_state=seed),
        "Random forest": RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1),
    }


def _scores(clf: Any, X: np.ndarray) -> np.ndarray:
    """Fake-probability-like scores in [0, 1]: predict_proba where the model has it, else σ(decision_function)
    (for the SVM: ≥ 0.5 exactly where it predicts fake; Platt scaling via probability=True is deprecated)."""
    if hasattr(clf, "predict_proba") and not hasattr(clf, "decision_function"):
        return clf.predict_proba(X)[:, 1]
    return 1.0 / (1.0 + np.exp(-clf.decision_function(X)))


def _metrics(y: np.ndarray, s: np.ndarray) -> dict:
    from fakelite.eval.metrics import binary_metrics

    return binary_metrics(y, s, 0.5)


def run_baselines(data: str | Path, *, crop: int = 256, cnn_models: list[str | Path] | None = None,
                  max_train: int | None = 4000, seed: int = 0, quiet: bool = True) -> dict[str, Any]:
    """Train the classical baselines on DATA/train, evaluate on every set under DATA/test (or DATA/val when there
    is no test/), and evaluate the given CNN .fakelite models on the same images.

    Returns {"features": {...}, "methods": {name: {"train_acc", "sets": {set: metrics}, "mean": metrics}}}.
    """
    import numpy as np

    from fakelite.data.dataset import split_items
    from fakelite.data.folders import discover_sets
    from fakelite.eval.metrics import mean_metrics

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
            s = _scores(clf, X) if len(y) else np.zeros(0)
            m = _metrics(y, s)
            m["skipped"] = len(sk)
            row["sets"][sname] = m
        row["mean"] = mean_metrics(list(row["sets"].values()))
        result["methods"][name] = row
    for path in cnn_models or []:
        from fakelite.artifact import load
        from fakelite.compress.measure import eval_means
        from fakelite.data.dataset import ImageDataset
        from fakelite.eval.evaluate import predict_dataset

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
