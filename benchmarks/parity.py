"""How exactly does the integer ONNX graph reproduce a quantized model? Writes docs/results/parity.{md,json}.

    python benchmarks/parity.py --model runs/q/model.fakelite [--model ...] --data runs/facesynth64/test

For every image under --data (the model's eval preprocessing), four evaluations of the same quantized model:

- `fake-quant f32`: the PyTorch model as trained and evaluated (`model.eval()`, float32 convs on dequantized
  values, BatchNorm unfolded) — the reference of `fakelite eval`;
- `fake-quant f64-acc`: the same graph with each quantized conv accumulated in float64 (rounded once to float32) —
  the same real-number function as `fake-quant f32`, only the rounding differs;
- `integer (torch)`: `integer_module(model)`, the deploy form the exporter traces (BN folded, integer
  accumulators, float epilogues), run in PyTorch;
- `integer ONNX`: the exported graph in ONNX Runtime.

Pairwise: decisions at the model's threshold, max/mean |logit difference|, images that differ by > 1e-3, and for
each disagreeing decision how far the reference logit was from the threshold logit. At 2 bits one activation
that lands within float rounding of a quantizer threshold takes the other code and moves the logit a lot; the
f32-vs-f64 row measures that noise floor of the fake-quant graph itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def _f64_accumulation():
    """Quantized convs accumulate in float64 during the block (same function, other rounding)."""
    import torch.nn.functional as F

    from fakelite.quant.layers import QuantConv2d

    original = QuantConv2d.forward

    def forward(self, x):
        xh, w = self.input_quantizer(x), self.weight_quantizer(self.weight)
        y = F.conv2d(xh.double(), w.double(), None, self.stride, self.padding, self.dilation, self.groups).float()
        if self.bias is not None:
            y = y + self.bias.reshape(1, -1, 1, 1)
        return self._post(y, x)

    QuantConv2d.forward = forward
    try:
        yield
    finally:
        QuantConv2d.forward = original


def load_images(model, data: Path):
    """Every image under `data` (fakelite's image listing), preprocessed for `model`; unreadable files are named on
    stderr and skipped. Returns (N, 3, H, W) tensor, relative names."""
    import torch

    from fakelite.data.folders import list_images
    from fakelite.data.io import BadInput, load_rgb
    from fakelite.data.transforms import eval_transform

    xs, names = [], []
    for f in list_images(data):
        try:
            xs.append(eval_transform(load_rgb(f), model.preprocess))
            names.append(str(f.relative_to(data)))
        except BadInput as e:
            print(f"skipped {e}", file=sys.stderr)
    return torch.stack(xs), names


def _logits(fn, x, batch: int = 256) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate([np.asarray(fn(x[i : i + batch])).reshape(-1) for i in range(0, len(x), batch)]).astype(
            np.float64
        )


def _compare(a: np.ndarray, b: np.ndarray, lt: float, names: list[str]) -> dict:
    d = np.abs(a - b)
    flips = np.nonzero((a >= lt) != (b >= lt))[0]
    return {
        "same_decisions": int(len(a) - len(flips)),
        "max_abs_logit_diff": float(d.max()),
        "mean_abs_logit_diff": float(d.mean()),
        "images_over_1e-3": int((d > 1e-3).sum()),
        "disagreements": [{"image": names[i], "logit_a": float(a[i]), "logit_b": float(b[i]),
                           "ref_distance_to_threshold": float(abs(a[i] - lt))} for i in flips],
    }


def run(model_path: Path, data: Path) -> dict:
    import onnxruntime as ort
    import torch

    from fakelite.artifact import load
    from fakelite.deploy.onnx import export_onnx, integer_module

    torch.set_num_threads(2)
    m = load(model_path).eval()
    x, names = load_images(m, data)
    thr = float(getattr(m, "threshold", 0.5))
    lt = float(np.log(thr / (1 - thr)))
    f32 = _logits(m, x)
    with _f64_accumulation():
        f64 = _logits(m, x)
    dep = _logits(integer_module(m), x)
    with tempfile.TemporaryDirectory() as td:
        path = Path(td) / "q.onnx"
        export_onnx(m, path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        onnx_logits = _logits(lambda b: sess.run(None, {"input": b.numpy()})[0], x)
    pairs = {
        "integer ONNX vs fake-quant f32": (f32, onnx_logits),
        "integer ONNX vs integer (torch)": (dep, onnx_logits),
        "integer (torch) vs fake-quant f32": (f32, dep),
        "fake-quant f64-acc vs fake-quant f32": (f32, f64),
        "integer ONNX vs fake-quant f64-acc": (f64, onnx_logits),
    }
    return {"model": str(model_path), "images": len(x), "threshold": thr,
            "pairs": {k: _compare(a, b, lt, names) for k, (a, b) in pairs.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, action="append", required=True, help="quantized .fakelite (repeatable)")
    ap.add_argument("--data", type=Path, required=True, help="images, searched recursively")
    ap.add_argument("--out", type=Path, default=Path("docs/results/parity.md"))
    a = ap.parse_args()
    results = [run(m, a.data) for m in a.model]
    lines = ["# Integer ONNX parity", "",
             f"Command: `python benchmarks/parity.py {' '.join(f'--model {m}' for m in a.model)} --data {a.data}`", "",
             "Pairs of evaluations of the same quantized model on every image (see the script's docstring); decisions "
             "at the model's threshold; *near threshold* = the largest distance of a disagreeing image's reference "
             "logit from the threshold logit.", ""]
    for r in results:
        lines += [f"## {r['model']} — {r['images']} images, threshold {r['threshold']:.4f}", "",
                  "| pair | same decisions | max \\|Δlogit\\| | mean \\|Δlogit\\| | images > 1e-3 | near threshold |",
                  "|---|---|---|---|---|---|"]
        for k, p in r["pairs"].items():
            near = max((d["ref_distance_to_threshold"] for d in p["disagreements"]), default=None)
            lines.append(f"| {k} | {p['same_decisions']}/{r['images']} | {p['max_abs_logit_diff']:.3g} | "
                         f"{p['mean_abs_logit_diff']:.3g} | {p['images_over_1e-3']} | "
                         f"{'—' if near is None else f'{near:.3f}'} |")
        lines.append("")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines))
    a.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
