"""Where the time goes in OpenVINO: per-layer-type shares of a model's QDQ (or FP32) graph, with exec types.

    python benchmarks/profile_openvino.py --model runs/demo/w2a2/model.fakelite [--size 224] [--runs 30]

A quantized .fakelite is exported with `export_onnx(qdq=True)`, an FP one as FP32 ONNX; a .onnx is used as is.
OpenVINO's per-node performance counters (PERF_COUNT) are summed over `--runs` inferences at batch 1, 1 thread,
and grouped by node type and exec type (e.g. "Convolution jit_avx512_1x1_I8" / "Eltwise jit_avx512_FP32"):
which convs run in int8, and what share the float work around them takes. Prints a table; `--json` writes it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np


def profile(onnx_path: Path, size: int, runs: int, threads: int = 1) -> dict:
    """{"total_ms": per-inference sum of node times, "rows": [{type, exec, ms, share, n}], "host"}."""
    import openvino as ov

    from fakelite.deploy.host import host_info

    core = ov.Core()
    m = core.read_model(str(onnx_path))
    m.reshape([1, 3, size, size])
    cm = core.compile_model(m, "CPU", {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": threads,
                                       "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    req = cm.create_infer_request()
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    for _ in range(3):
        req.infer({0: x})
    acc: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for _ in range(runs):
        req.infer({0: x})
        for p in req.get_profiling_info():
            if p.status != p.Status.EXECUTED:
                continue
            k = (p.node_type, p.exec_type)
            acc[k][0] += p.real_time.total_seconds() * 1e3
            acc[k][1] += 1
    total = sum(v[0] for v in acc.values()) / runs
    rows = sorted(({"type": t, "exec": e, "ms": round(v[0] / runs, 3), "share": round(v[0] / runs / total, 4),
                    "n": v[1] // runs} for (t, e), v in acc.items()), key=lambda r: -r["ms"])
    return {"total_ms": round(total, 3), "rows": rows, "host": host_info(threads), "size": size, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as td:
        path = a.model
        if path.suffix.lower() != ".onnx":
            from fakelite.artifact import load
            from fakelite.deploy.onnx import export_onnx

            model = load(path)
            path = Path(td) / "m.onnx"
            export_onnx(model, path, qdq=bool(getattr(model, "fakelite_quant", None)))
        res = profile(path, a.size, a.runs, a.threads)
    from fakelite.deploy.host import describe

    print(f"{a.model}: {res['total_ms']:.2f} ms per inference (sum of node times), {describe(res['host'])}")
    for r in res["rows"][: a.top]:
        print(f"{r['share'] * 100:5.1f} %  {r['ms']:7.3f} ms  ×{r['n']:<3d} {r['type']:<16s} {r['exec']}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
