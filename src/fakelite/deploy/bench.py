"""`fakelite bench`: latency of one backend on random input of the model's crop size.

Backends (runtime[-graph]): torch (the .fakelite in PyTorch eager), onnx = onnxruntime (FP32 ONNX, or the given
.onnx as is), onnx-int8 (ORT-specific integer ONNX of a quantized model, ORT static int8 of an FP one — calibrated
on --data images, or on random input when none are given, which is fine for timing only), onnx-qdq (the standard
QDQ graph of a quantized model — `export --format onnx-qdq` —, ORT static int8 QDQ of an FP one) on ONNX Runtime,
openvino (FP32 ONNX of an FP model, the QDQ graph of a quantized one, or the given .onnx) and openvino-qdq (the
onnx-qdq file) on OpenVINO, tflite = litert (a given .tflite). Every result records the host (`host.host_info`). Warm-up runs, then timed runs:
median and p90 latency, throughput (batch/median), peak RSS (ru_maxrss of this process), model bytes, and — when
the MACs are known (a .fakelite model) — achieved GMAC/s and the fraction of the host's int8 peak (`host.rates`).
`compare` runs each backend in its own subprocess so RSS and thread pools do not mix.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fakelite.artifact import load
from fakelite.data.folders import list_images
from fakelite.data.io import BadInput, load_rgb
from fakelite.data.transforms import eval_transform
from fakelite.deploy.host import host_info, rates
from fakelite.deploy.onnx import export_onnx
from fakelite.deploy.runtime import Detector
from fakelite.quant.cost import layer_macs

BENCH_BACKENDS = ("torch", "onnx", "onnx-int8", "onnx-qdq", "openvino", "openvino-qdq", "tflite", "auto")
# canonical runtime names (torch, onnxruntime, litert, openvino) accepted for the bench names above
BENCH_ALIASES = {"onnxruntime": "onnx", "ort": "onnx", "onnxruntime-int8": "onnx-int8", "onnxruntime-qdq": "onnx-qdq",
                 "litert": "tflite", "ov": "openvino", "ov-qdq": "openvino-qdq", "pytorch": "torch"}
# the Detector backend (runtime) each bench backend runs on
RUNTIME_OF = {"torch": "torch", "onnx": "onnxruntime", "onnx-int8": "onnxruntime", "onnx-qdq": "onnxruntime",
              "openvino": "openvino", "openvino-qdq": "openvino", "tflite": "litert", "auto": "auto"}


def bench_name(name: str) -> str:
    """The bench backend name of `name` (aliases resolved); ValueError for an unknown one."""
    b = BENCH_ALIASES.get(name.strip(), name.strip())
    if b not in BENCH_BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BENCH_BACKENDS)}")
    return b


def _peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 1024.0 / 1024.0


def prepare(model_path: Path, backend: str, workdir: Path, calib_data: Path | None = None,
            n_calib: int = 16) -> Path:
    """The file the backend runs: the .fakelite itself, or an ONNX export of it (written into workdir)."""
    backend = bench_name(backend)
    model_path = Path(model_path)
    suffix = model_path.suffix.lower()
    if backend == "torch":
        if suffix != ".fakelite":
            raise ValueError(f"{model_path}: the torch backend needs a .fakelite file")
        return model_path
    if backend == "auto":  # the file as given: Detector.load's probe picks the runtime (a .fakelite runs in torch)
        return model_path
    if backend == "tflite":
        if suffix != ".tflite":
            raise ValueError(f"{model_path}: the tflite backend needs a .tflite file (see docs/deploy.md, LiteRT status)")
        return model_path
    if suffix == ".onnx":
        return model_path
    model = load(model_path)
    out = workdir / f"{model_path.stem}.{backend}.onnx"
    quant = bool(getattr(model, "fakelite_quant", None))
    if backend == "onnx" and quant:
        raise ValueError(f"{model_path}: a quantized model exports as integer ONNX: use --backend onnx-int8 or onnx-qdq")
    qdq = backend in ("onnx-qdq", "openvino-qdq") or (backend == "openvino" and quant)
    int8 = backend == "onnx-int8" or (qdq and not quant)  # FP models: ORT static int8 (a QDQ graph)
    calib = calibration_array(model.preprocess, calib_data, n_calib) if int8 and not quant else None
    export_onnx(model, out, int8=int8, calib=calib, qdq=qdq and quant)
    return out


def model_macs(model_path: Path, size: int | None = None) -> int | None:
    """Conv/Linear MACs of one (1, 3, size, size) input of a .fakelite (`quant.cost.layer_macs`; size defaults to
    its crop); None for other files (.onnx/.tflite carry no torch model to count)."""
    model_path = Path(model_path)
    if model_path.suffix.lower() != ".fakelite" or not model_path.is_file():
        return None
    m = load(model_path)
    return int(sum(r["macs"] for r in layer_macs(m, int(size or m.preprocess.crop))))


def calibration_array(pre, data: Path | None, n: int, seed: int = 0) -> np.ndarray:
    """(n, 3, crop, crop) preprocessed images from `data` (any folder of images), else random normal input."""
    if data is not None:
        files = sorted(list_images(Path(data)))
        rng = np.random.default_rng(seed)
        rng.shuffle(files)
        out = []
        for p in files:
            try:
                t = eval_transform(load_rgb(p), pre).numpy()
            except BadInput:
                continue
            if t.shape[1:] == (pre.crop, pre.crop):
                out.append(t)
            if len(out) >= n:
                break
        if out:
            return np.stack(out).astype(np.float32)
    return np.random.default_rng(seed).standard_normal((n, 3, pre.crop, pre.crop)).astype(np.float32)


def time_image_scoring(det, image_size: int, runs: int = 10, warmup: int = 2) -> dict[str, Any]:
    """End-to-end latency of scoring one random image_size² RGB image with `det.predict_arrays` under the
    detector's scoring policy (preprocessing, every crop, aggregation): {"policy", "aggregate", "image_size",
    "crops", "latency_ms": {"median", "p90"}}."""
    img = np.random.default_rng(0).integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
    for _ in range(warmup):
        det.predict_arrays([img])
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        det.predict_arrays([img])
        times.append(time.perf_counter() - t0)
    t = np.asarray(times) * 1e3
    return {"policy": det.preprocess.policy, "aggregate": det.preprocess.aggregate, "image_size": int(image_size),
            "crops": len(det.crops(img)),
            "latency_ms": {"median": round(float(np.median(t)), 3), "p90": round(float(np.percentile(t, 90)), 3)}}


def run_bench(path: Path, backend: str, size: int | None = None, threads: int = 1, batch: int = 1,
              warmup: int = 5, runs: int = 30, min_seconds: float = 0.0, policy: str | None = None,
              aggregate: str | None = None, image_size: int = 1024, macs: int | None = None) -> dict[str, Any]:
    """Time `path` on one backend in this process; returns the bench JSON (DESIGN.md §3). With `policy`, also
    "image": the end-to-end scoring of one image_size² image under that policy (`time_image_scoring`). `macs`
    (per image, `model_macs`) adds "macs", "gmac_per_s", "int8_peak_gmac_per_s", "peak_fraction", "peak_assumption"
    (`host.rates`; None values when unknown)."""
    backend = bench_name(backend)
    det = Detector.load(path, backend=RUNTIME_OF[backend], threads=threads)
    size = size or det.preprocess.crop
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    for _ in range(warmup):
        det.logits(x)
    times = []
    t_end = time.perf_counter() + min_seconds
    while len(times) < runs or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        det.logits(x)
        times.append(time.perf_counter() - t0)
    t = np.asarray(times) * 1e3
    med = float(np.median(t))
    res = {"backend": backend, "size": int(size), "threads": int(threads), "batch": int(batch),
           "latency_ms": {"median": round(med, 3), "p90": round(float(np.percentile(t, 90)), 3)},
           "throughput_ips": round(batch * 1000.0 / med, 2), "peak_rss_mb": round(_peak_rss_mb(), 1),
           "model_bytes": int(Path(path).stat().st_size), "runs": len(times), "model": str(path),
           "runtime": det.backend, "backend_reason": det.backend_reason, "host": host_info(threads)}
    res.update(rates(macs * batch if macs else None, med, res["host"], threads))
    if policy is not None or aggregate is not None:
        det.set_scoring(policy, aggregate)
        res["image"] = time_image_scoring(det, image_size, runs=max(3, runs // 3))
        res["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return res


def compare(model_path: Path, backends: list[str], size: int | None = None, threads: int = 1, batch: int = 1,
            runs: int = 30, calib_data: Path | None = None, policy: str | None = None,
            aggregate: str | None = None, image_size: int = 1024) -> dict[str, Any]:
    """Bench each backend in its own subprocess (`python -m fakelite.deploy.bench`) and compute ratios."""
    backends = [bench_name(b) for b in backends]
    results = {}
    macs = model_macs(model_path, size)
    with tempfile.TemporaryDirectory() as td:
        for b in backends:
            f = prepare(model_path, b, Path(td), calib_data)
            cmd = [sys.executable, "-m", "fakelite.deploy.bench", str(f), b, str(size or 0), str(threads), str(batch),
                   str(runs), policy or "-", aggregate or "-", str(image_size), str(macs or 0)]
            r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "FAKELITE_QUIET": "1"})
            if r.returncode != 0:
                raise RuntimeError(f"bench {b} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
            results[b] = json.loads(r.stdout.strip().splitlines()[-1])
    base = results[backends[0]]["latency_ms"]["median"]
    ratios = {b: round(base / r["latency_ms"]["median"], 3) for b, r in results.items()}
    return {"results": results, "speedup_vs_" + backends[0]: ratios, "host": host_info(threads)}


if __name__ == "__main__":  # subprocess entry used by compare()
    p, b, s, th, bt, n = sys.argv[1:7]
    pol, agg, isz, mc = (sys.argv[7:11] + ["-", "-", "1024", "0"][len(sys.argv[7:11]):])
    print(json.dumps(run_bench(Path(p), b, int(s) or None, int(th), int(bt), runs=int(n),
                               policy=None if pol == "-" else pol, aggregate=None if agg == "-" else agg,
                               image_size=int(isz), macs=int(mc) or None)))
