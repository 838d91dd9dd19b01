"""Latency of one network on every installed runtime, interleaved in one process: fair ratios on a busy host.

    python benchmarks/speed_backends.py --model runs/demo/fp/model.fakelite --qmodel runs/demo/w4a4/model.fakelite \\
        --qmodel runs/demo/w2a2/model.fakelite [--size 224] [--rounds 30] [--out docs/results/speed_backends.json]

Each quantized model is exported twice — the ORT integer graph (`export --format onnx`) and the standard QDQ
graph (`--format onnx-qdq`) — and the FP model as FP32 ONNX. Every (file, runtime) pair is loaded once
(`Detector.load(..., backend=...)`, 1 thread each), warmed up, and then timed round-robin: one batch-1 call per
entry per round, so a load spike on a shared machine hits all entries alike and the ratios stay meaningful where
absolute times do not. Reports the median ms, GMAC/s (the model's conv/linear MACs at that size / median), the
fraction of the host's int8 peak (`deploy.host.int8_peak`: threads × clock × int8 MACs/cycle/core of the best ISA,
docs/deploy.md "Roofline"), the fastest runtime per model, and the host (CPU model, int8 flags, runtime versions).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def entries_for(model_path: Path, td: Path) -> tuple[str, object, list[tuple[str, str, Path]]]:
    """(label, the loaded model, [(graph, backend, file)]) of one .fakelite."""
    from fakelite.artifact import load
    from fakelite.deploy.autoselect import installed
    from fakelite.deploy.onnx import export_onnx

    m = load(model_path)
    quant = bool(getattr(m, "fakelite_quant", None))
    stem = f"{model_path.parent.name}_{model_path.stem}"
    out: list[tuple[str, str, Path]] = []
    if quant:
        export_onnx(m, td / f"{stem}.int.onnx")
        export_onnx(m, td / f"{stem}.qdq.onnx", qdq=True)
        out += [("ORT integer graph", "onnxruntime", td / f"{stem}.int.onnx"),
                ("QDQ graph", "onnxruntime", td / f"{stem}.qdq.onnx")]
        if installed("openvino"):
            out.append(("QDQ graph", "openvino", td / f"{stem}.qdq.onnx"))
    else:
        export_onnx(m, td / f"{stem}.fp32.onnx")
        out += [("PyTorch eager", "torch", model_path), ("FP32 ONNX", "onnxruntime", td / f"{stem}.fp32.onnx")]
        if installed("openvino"):
            out.append(("FP32 ONNX", "openvino", td / f"{stem}.fp32.onnx"))
    q = (m.fakelite_quant or {}).get("config", {}) if quant else {}
    label = (f"{q.get('quantizer', 'quantized')} W{q.get('w_bits', '?')}A{q.get('a_bits', '?')}"
             + (" + CQB" if q.get("cqb") else "")) if quant else "FP32"
    return f"{label} ({model_path.parent.name})", m, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="FP .fakelite")
    ap.add_argument("--qmodel", type=Path, action="append", default=[], help="quantized .fakelite (repeat)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", type=Path, help="JSON results here")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from fakelite.deploy.host import describe, host_info, host_kind, int8_peak, rates
    from fakelite.deploy.runtime import Detector
    from fakelite.quant.cost import model_cost

    x = np.random.default_rng(0).standard_normal((1, 3, a.size, a.size)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as td:
        for mp in [a.model, *a.qmodel]:
            label, m, ents = entries_for(mp, Path(td))
            macs = int(model_cost(m, a.size)["macs"])
            for graph, backend, f in ents:
                det = Detector.load(f, backend=backend, threads=1)
                rows.append({"model": label, "graph": graph, "backend": backend, "macs": macs, "det": det,
                             "bytes": f.stat().st_size, "t": []})
        for r in rows:
            for _ in range(a.warmup):
                r["det"].logits(x)
        for _ in range(a.rounds):
            for r in rows:
                t0 = time.perf_counter()
                r["det"].logits(x)
                r["t"].append(time.perf_counter() - t0)
    host = host_info(1)
    base = rows[0]
    out = []
    for r in rows:
        med = float(np.median(r["t"]) * 1e3)
        rt = rates(r["macs"], med, host, 1)
        out.append({k: r[k] for k in ("model", "graph", "backend", "macs", "bytes")}
                   | {"median_ms": round(med, 3), "p90_ms": round(float(np.percentile(r["t"], 90) * 1e3), 3),
                      "gmac_per_s": round(r["macs"] / med / 1e6, 1), "peak_fraction": rt["peak_fraction"]})
    t0 = float(np.median(base["t"]) * 1e3)
    fastest: dict[str, dict] = {}
    for r in out:
        if r["model"] not in fastest or r["median_ms"] < fastest[r["model"]]["median_ms"]:
            fastest[r["model"]] = r
    print(f"Host ({host_kind(host)}): {describe(host)}; batch 1, {a.size}², 1 thread, median of {a.rounds} "
          f"interleaved rounds")
    peak = int8_peak(host, 1)
    print(f"int8 peak: {peak['gmac_per_s']:.0f} GMAC/s = 1 thread × {peak['mhz']:.0f} MHz × "
          f"{peak['macs_per_cycle']:g} MACs/cycle ({peak['source']})\n" if peak else "int8 peak: unknown here\n")
    print("| model | graph | runtime | median ms | p90 ms | GMAC/s | % int8 peak | vs FP32 PyTorch | fastest for the "
          "model |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in out:
        star = "**yes**" if fastest[r["model"]] is r else ""
        pct = "" if r["peak_fraction"] is None else f"{100 * r['peak_fraction']:.1f}"
        print(f"| {r['model']} | {r['graph']} | {r['backend']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | "
              f"{r['gmac_per_s']:.0f} | {pct} | {t0 / r['median_ms']:.2f}× | {star} |")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"host": host, "int8_peak": peak, "size": a.size, "rounds": a.rounds, "rows": out,
                                     "fastest": {k: {"graph": v["graph"], "backend": v["backend"],
                                                     "median_ms": v["median_ms"]} for k, v in fastest.items()}},
                                    indent=1))


if __name__ == "__main__":
    main()
