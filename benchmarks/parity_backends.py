"""Decisions of every deployed form of a quantized model, per runtime, vs its fake-quant PyTorch model.

    python benchmarks/parity_backends.py --model runs/demo/w4a4/model.fakelite [--model ...] \\
        --data runs/facesynth64/test [--json docs/results/parity_backends.json]

For every image under --data (the model's eval preprocessing): the fake-quant PyTorch model (the reference
`fakelite eval` reports), its integer deploy form in PyTorch (`integer_module`), and the exported files in their
runtimes — the ORT integer graph on ONNX Runtime, the standard QDQ graph and its exact form (`export --format
onnx-qdq --exact`) on ONNX Runtime and on OpenVINO. Each
row: same decisions at the model's threshold, max and mean |Δlogit| vs the fake-quant model, and max |Δlogit| vs
the integer model (the arithmetic the graphs implement).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from parity import load_images  # benchmarks/parity.py


def _batched(fn, x, batch: int = 128) -> np.ndarray:
    return np.concatenate([np.asarray(fn(x[i : i + batch])).reshape(-1) for i in range(0, len(x), batch)]).astype(
        np.float64)


def run(model_path: Path, data: Path) -> list[dict]:
    import torch

    from fakelite.artifact import load
    from fakelite.deploy.autoselect import installed
    from fakelite.deploy.onnx import export_onnx, integer_module
    from fakelite.deploy.runtime import Detector

    m = load(model_path).eval()
    x, _ = load_images(m, data)
    thr = float(getattr(m, "threshold", 0.5))
    lt = float(np.log(thr / (1 - thr)))
    with torch.no_grad():
        ref = _batched(m, x)
        ref_int = _batched(integer_module(m), x)
    rows = []
    with tempfile.TemporaryDirectory() as td:
        export_onnx(m, Path(td) / "int.onnx")
        export_onnx(m, Path(td) / "qdq.onnx", qdq=True)
        export_onnx(m, Path(td) / "qdq_exact.onnx", qdq=True, exact=True)
        forms = [("ORT integer graph", "int.onnx", "onnxruntime"), ("QDQ graph", "qdq.onnx", "onnxruntime"),
                 ("exact QDQ graph", "qdq_exact.onnx", "onnxruntime")]
        if installed("openvino"):
            forms += [("QDQ graph", "qdq.onnx", "openvino"), ("exact QDQ graph", "qdq_exact.onnx", "openvino")]
        for graph, f, backend in forms:
            det = Detector.load(Path(td) / f, backend=backend, threads=2)
            got = _batched(lambda b, det=det: det.logits(b.numpy()), x)
            d = np.abs(got - ref)
            rows.append({"model": str(model_path), "graph": graph, "backend": backend, "n": len(x),
                         "same_decisions": int(((got >= lt) == (ref >= lt)).sum()),
                         "max_abs_logit_diff": float(d.max()), "mean_abs_logit_diff": float(d.mean()),
                         "max_abs_diff_vs_integer_model": float(np.abs(got - ref_int).max())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append", required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    rows = [r for mp in a.model for r in run(mp, a.data)]
    print("| model | graph | runtime | images | same decisions | max \\|Δlogit\\| vs fake-quant | mean | "
          "max vs integer model |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {Path(r['model']).parent.name}/{Path(r['model']).stem} | {r['graph']} | {r['backend']} | {r['n']} | {r['same_decisions']} | "
              f"{r['max_abs_logit_diff']:.3g} | {r['mean_abs_logit_diff']:.3g} | {r['max_abs_diff_vs_integer_model']:.2g} |")
    if a.json:
        from fakelite.deploy.host import host_info

        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"host": host_info(2), "data": str(a.data), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
