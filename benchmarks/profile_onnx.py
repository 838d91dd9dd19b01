"""Where the time goes in an ONNX graph: ONNX Runtime's profiler, per op type and per node.

    python benchmarks/profile_onnx.py --model runs/demo/w4a4/model.fakelite [--size 224] [--threads 1] [--top 25]

--model is a .fakelite (exported first: integer graph for quantized models, FP32 otherwise) or an .onnx file.
Prints the median latency of 40 runs, then each op type's share of the kernel time and the slowest nodes, averaged
over 30 profiled runs. The percentages in docs/deploy.md ("Speed") come from this script.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=25, help="slowest nodes to list")
    a = ap.parse_args()
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as td:
        path = a.model
        if path.suffix != ".onnx":
            from fakelite.artifact import load
            from fakelite.deploy.onnx import export_onnx

            path = Path(td) / "model.onnx"
            export_onnx(load(a.model), path, size=a.size)
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = a.threads
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        x = np.random.default_rng(0).random((1, 3, a.size, a.size), dtype=np.float32)
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        for _ in range(10):
            sess.run(None, {"input": x})
        ts = []
        for _ in range(40):
            t = time.perf_counter()
            sess.run(None, {"input": x})
            ts.append(time.perf_counter() - t)
        print(f"{a.model} at {a.size}², {a.threads} thread(s): median {1000 * np.median(ts):.2f} ms")
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(td) / "prof")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        runs = 30
        for _ in range(runs):
            sess.run(None, {"input": x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    by_op: collections.Counter = collections.Counter()
    by_node: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
            by_node[e["name"].removesuffix("_kernel_time")] += e["dur"]
    total = sum(by_op.values())
    print("\nop type                    share   ms/run")
    for op, us in by_op.most_common():
        print(f"{op:25s} {100 * us / total:5.1f} %  {us / runs / 1000:.3f}")
    print(f"\nslowest {a.top} nodes (ms/run)")
    for node, us in by_node.most_common(a.top):
        print(f"  {us / runs / 1000:.3f}  {node}")


if __name__ == "__main__":
    sys.exit(main())
