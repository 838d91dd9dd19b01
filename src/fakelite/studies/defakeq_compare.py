"""The DeFakeQ comparison study (`fakelite compare`): DeFakeQ vs PTQ baselines at matched packed storage
(docs/results/defakeq.{md,json}).

Budgets: the packed storage of uniform W2A2, W3A3 and W4A4 (first/last layers 8-bit in every model). At each
budget: PTQ MinMax and PTQ percentile (uniform), HAQ + PTQ percentile (mixed, same storage), LSQ + progressive
contrastive calibration (uniform), DeFakeQ HAQ + calibration and DeFakeQ HAQ + VEFT + calibration (mixed; the
VEFT rows are inside the budget). At W2 nothing below 2 bits exists, so HAQ equals uniform there and the VEFT
effect is shown on the uniform model instead (its storage then exceeds W2 by the VEFT rows, reported).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fakelite.data.dataset import calibration_batches
from fakelite.data.io import BadInput, load_rgb
from fakelite.data.transforms import eval_transform
from fakelite.eval.metrics import binary_metrics, mean_metrics
from fakelite.eval.robustness import resolve_data, subsample
from fakelite.quant.convert import QuantConfig, calibrate, quantize
from fakelite.quant.cost import model_cost
from fakelite.quant.defakeq import (
    DEFAULT_VEFT_RATIO,
    CalibConfig,
    TeacherCache,
    allocate,
    base_config,
    build_student,
    calibrate_defakeq,
    choose_veft_channels,
    measure_costs,
    measure_haq,
    mixed_config,
    plot_allocation,
)

METHODS = {
    "ptq-minmax": "PTQ MinMax (uniform)",
    "ptq-percentile": "PTQ percentile (uniform)",
    "haq-ptq-percentile": "HAQ mixed + PTQ percentile",
    "calib": "LSQ + progressive contrastive calib (uniform)",
    "veft-calib": "VEFT + progressive contrastive calib (uniform)",
    "haq-calib": "DeFakeQ: HAQ + calib",
    "haq-veft-calib": "DeFakeQ: HAQ + VEFT + calib",
}


def _load_test(data: Path, preprocess: Any, per_set: int | None, seed: int = 0) -> dict[str, Any]:
    """Test sets (optionally subsampled), decoded once: unique image tensors + per-set index lists."""
    sets = resolve_data(data)
    if per_set:
        sets = subsample(sets, per_set, seed)
    uniq: dict[Path, int] = {}
    xs, skipped = [], 0
    index: dict[str, tuple[list[int], list[int]]] = {}
    for s in sets:
        ids, labels = [], []
        for p, y in s.items:
            if p not in uniq:
                try:
                    xs.append(eval_transform(load_rgb(p), preprocess))
                except BadInput:
                    skipped += 1
                    continue
                uniq[p] = len(xs) - 1
            ids.append(uniq[p])
            labels.append(int(y))
        index[s.name] = (ids, labels)
    return {"x": torch.stack(xs), "index": index, "skipped": skipped}


def _score(model: Any, test: dict[str, Any], batch_size: int = 128) -> dict[str, Any]:
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(test["x"]), batch_size):
            out.append(torch.sigmoid(model(test["x"][i:i + batch_size]).float().reshape(-1)))
    s = torch.cat(out).numpy()
    sets = {}
    for name, (ids, labels) in test["index"].items():
        m = binary_metrics(np.asarray(labels), s[np.asarray(ids, dtype=np.int64)], 0.5)
        sets[name] = {k: m.get(k) for k in ("auc", "ap", "acc", "n")}
    mean = mean_metrics(list(sets.values()))
    return {"sets": sets, "mean": {k: mean.get(k) for k in ("auc", "ap", "acc", "n")}}


def run_compare(fp: Any, data: Path, out: Path, img_dir: Path | None = None, quick: bool = False, calib: int = 256,
                per_set: int | None = 200, seed: int = 0, quiet: bool = True,
                echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the comparison; writes out/defakeq.{json,md} and img_dir/defakeq_*.png. Returns the result dict.

    `fp`: the full-precision model; `data`: a dataset root with train/ and test/<set>/{0_real,1_fake}. Unless
    `quiet`, one line per model goes to `echo`. Raises ValueError (no usable calibration image) and
    FileNotFoundError (no train/ or test sets).
    """
    t_all = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    img_dir = Path(img_dir) if img_dir else out / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    fp.eval()
    pre = fp.preprocess
    batches = calibration_batches(data, pre, n=calib, batch_size=32, seed=seed)
    if not batches:
        raise ValueError(f"{data}: no usable training images for calibration")
    size = int(batches[0][0].shape[-1])
    test = _load_test(data, pre, per_set, seed)
    widths = (3,) if quick else (2, 3, 4)
    ccfg = CalibConfig(stage_epochs=0.01 if quick else 1.0, final_epochs=0.01 if quick else 1.0, seed=seed)
    veft_ratio = DEFAULT_VEFT_RATIO
    rows: list[dict[str, Any]] = []

    def record(method: str, width: int, model: Any, extra: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        ev = _score(model, test)
        cost = model_cost(model, size)
        row = {"method": method, "label": METHODS[method], "budget": f"W{width}", "storage_bytes": cost["storage_bytes"],
               "bops": cost["bops"], "bits": cost["bits"], **ev, "eval_s": time.perf_counter() - t0, **extra}
        rows.append(row)
        if not quiet:
            echo(f"  {row['budget']} {method:18s} AUC {ev['mean']['auc']:.4f}  AP {ev['mean']['ap']:.4f}  "
                       f"Acc {ev['mean']['acc']:.4f}  {cost['storage_bytes'] / 1e3:.1f} kB")

    fp_eval = _score(fp, test)
    fp_cost = model_cost(fp, size)
    # --- HAQ measurement (once: LSQ scores drive DeFakeQ, percentile scores drive the PTQ variant)
    t0 = time.perf_counter()
    bits = (2, 3, 4) if quick else (2, 3, 4, 8)
    sc_lsq = measure_haq(fp, batches, base_config("lsq"), bits=bits, veft_ratio=0.0, size=size)
    t_haq = time.perf_counter() - t0
    sc_pct = None if quick else measure_haq(fp, batches, base_config("percentile"), bits=bits, veft_ratio=0.0,
                                           size=size)
    vc = measure_costs(fp, base_config("lsq"), sc_lsq.layers, tuple(sc_lsq.bits), veft_ratio, size=size)
    sc_lsq_veft = dataclasses.replace(sc_lsq, storage=[vc["storage"][n] for n in sc_lsq.layers],
                                      bops=[vc["bops"][n] for n in sc_lsq.layers], base_storage=vc["base_storage"],
                                      base_bops=vc["base_bops"], veft_channels=vc["veft_channels"])
    cache = TeacherCache(fp, batches)
    calib_times: list[float] = []
    plots: dict[str, Path] = {}

    def calibrated(alloc: dict[str, int], veft: bool) -> tuple[Any, dict[str, Any]]:
        ch = choose_veft_channels(fp, alloc, vc["veft_channels"], batches, "lsq") if veft else None
        t = time.perf_counter()
        m = build_student(fp, alloc, batches, "lsq", ch)
        info = calibrate_defakeq(m, None, batches, ccfg, cache=cache)
        wall = time.perf_counter() - t
        calib_times.append(wall)
        return m, {"calib_wall_s": wall, "calib_steps": info["steps"], "trainable_params": info["trainable_params"],
                   "allocation": alloc, "veft_channels": sum(len(v) for v in (ch or {}).values())}

    for w in widths:
        uni = dict.fromkeys(sc_lsq.layers, w)
        for kind in ("percentile",) if quick else ("minmax", "percentile"):
            cfg = QuantConfig(w_bits=w, a_bits=w, quantizer=kind, first_last="8bit")
            m = quantize(copy.deepcopy(fp), cfg)
            calibrate(m, batches)
            record(f"ptq-{kind}", w, m, {})
        if not quick:
            m, info = calibrated(uni, False)
            record("calib", w, m, info)
        if w == 2:  # nothing below 2 bits: HAQ = uniform here, show VEFT on the uniform model
            m, info = calibrated(uni, True)
            record("veft-calib", w, m, info)
            continue
        if sc_pct is not None:
            b_pct = sc_pct.plan_storage(dict.fromkeys(sc_pct.layers, w))
            a = allocate(sc_pct, budget_bytes=b_pct)
            m = quantize(copy.deepcopy(fp), mixed_config(base_config("percentile"), a))
            calibrate(m, batches)
            record("haq-ptq-percentile", w, m, {"allocation": a, "budget_bytes": b_pct})
        budget = sc_lsq.plan_storage(uni)
        a = allocate(sc_lsq, budget_bytes=budget)
        m, info = calibrated(a, False)
        record("haq-calib", w, m, {**info, "budget_bytes": budget})
        plots[f"W{w}"] = plot_allocation(sc_lsq, a, img_dir / f"defakeq_haq_w{w}.png",
                                         title=f"DeFakeQ HAQ at the packed storage of uniform W{w}A{w} "
                                               f"({budget / 1e3:.1f} kB)")
        a = allocate(sc_lsq_veft, budget_bytes=budget)
        m, info = calibrated(a, True)
        record("haq-veft-calib", w, m, {**info, "budget_bytes": budget})
    result = {
        "data": str(data), "calib_images": sum(len(b[1]) for b in batches), "size": size, "per_set": per_set,
        "quick": quick, "threads": torch.get_num_threads(), "fp": {**fp_eval, "storage_bytes": fp_cost["storage_bytes"]},
        "rows": rows, "haq_time_s": t_haq, "calib_config": ccfg.to_dict(),
        "calib_wall_s": {"max": max(calib_times) if calib_times else 0.0,
                         "mean": sum(calib_times) / len(calib_times) if calib_times else 0.0},
        "test_images": int(len(test["x"])), "skipped_test_images": test["skipped"],
        "haq_scores": sc_lsq.to_dict(), "total_wall_s": time.perf_counter() - t_all,
    }
    (out / "defakeq.json").write_text(json.dumps(result, indent=2, default=str))
    plots["auc"] = _plot_auc(result, img_dir / "defakeq_auc_storage.png")
    (out / "defakeq.md").write_text(markdown(result, plots, out))
    return result


def _plot_auc(res: dict[str, Any], png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    markers = {"ptq-minmax": "v", "ptq-percentile": "^", "haq-ptq-percentile": "D", "calib": "o",
               "veft-calib": "s", "haq-calib": "P", "haq-veft-calib": "*"}
    for method in METHODS:
        pts = sorted((r["storage_bytes"] / 1e3, r["mean"]["auc"] or 0.0) for r in res["rows"] if r["method"] == method)
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=markers[method], ms=9 if method == "haq-veft-calib" else 6,
                    label=METHODS[method], alpha=0.85)
    ax.axhline(res["fp"]["mean"]["auc"], color="k", ls="--", lw=1, label="full precision")
    ax.set_xlabel("packed storage (kB)")
    ax.set_ylabel("mean AUC over test sets")
    ax.set_title(f"DeFakeQ vs PTQ at matched storage ({res['calib_images']} calibration images)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def _f(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def markdown(res: dict[str, Any], plots: dict[str, Path], out: Path) -> str:
    sets = list(res["fp"]["sets"])
    head = "| budget | method | storage kB | GBOPs | " + " | ".join(f"{s} AUC" for s in sets) + \
        " | mean AUC | mean AP | mean Acc | calib s |"
    lines = [f"# DeFakeQ comparison ({'quick' if res['quick'] else 'full'})", "",
             f"Data `{res['data']}`, {res['calib_images']} calibration images at {res['size']}², "
             f"{res['test_images']} test images ({res['per_set']} per set), {res['threads']} threads. "
             f"Total wall time {res['total_wall_s'] / 60:.1f} min; HAQ measurement {res['haq_time_s']:.0f} s; "
             f"calibration max {res['calib_wall_s']['max']:.0f} s per model.", "",
             "AUC/AP/Acc in %, Acc at threshold 0.5.", "", head, "|" + "---|" * (head.count("|") - 1)]
    fp = res["fp"]
    lines.append(f"| FP32 | full precision | {fp['storage_bytes'] / 1e3:.1f} | – | " +
                 " | ".join(_f(fp["sets"][s]["auc"]) for s in sets) +
                 f" | {_f(fp['mean']['auc'])} | {_f(fp['mean']['ap'])} | {_f(fp['mean']['acc'])} | – |")
    for r in res["rows"]:
        cal = f"{r['calib_wall_s']:.0f}" if "calib_wall_s" in r else "–"
        lines.append(f"| {r['budget']} | {r['label']} | {r['storage_bytes'] / 1e3:.1f} | {r['bops'] / 1e9:.2f} | "
                     + " | ".join(_f(r["sets"][s]["auc"]) for s in sets)
                     + f" | {_f(r['mean']['auc'])} | {_f(r['mean']['ap'])} | {_f(r['mean']['acc'])} | {cal} |")
    lines.append("")
    for k, p in plots.items():
        try:
            link = Path(os.path.relpath(Path(p).resolve(), out.resolve())).as_posix()
        except ValueError:  # another drive (Windows)
            link = str(p)
        lines.append(f"![{k}]({link})")
    return "\n".join(lines) + "\n"
