"""OpenVINO runtime for exported .onnx files (FP32 graphs and standard QDQ integer graphs).

OpenVINO's ONNX frontend reads the file directly (no conversion step, no IR files); its low-precision
transformations turn QuantizeLinear/DequantizeLinear pairs around Conv/Gemm into int8 convolutions
(``runtime_precisions`` below reads that back from the compiled model). The ORT-specific integer graph of
``export --format onnx`` uses the ``com.microsoft`` op MatMulIntegerToFloat, which OpenVINO cannot read: export
``--format onnx-qdq`` for OpenVINO.

The compiled model is specialised per input shape (a static shape compiles to faster kernels than a dynamic one);
a Detector sees one shape per batch size, so a small per-shape cache holds them. Inference precision is pinned
to f32 (``INFERENCE_PRECISION_HINT``): on CPUs with bf16 units OpenVINO would otherwise run float layers in bf16,
and the exported graph must give the exported model's decisions. int8 layers stay int8.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

import numpy as np


class OpenVINOUnavailable(RuntimeError):
    """openvino is not installed."""


def _core():
    try:
        import openvino as ov
    except ImportError as e:
        raise OpenVINOUnavailable("OpenVINO is not installed: pip install 'fakelite[openvino]'") from e
    return ov, ov.Core()


def _config(threads: int | None) -> dict[str, Any]:
    cfg: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    return cfg


class OpenVINORunner:
    """Callable (N, 3, H, W) float32 → (N,) float64 logits of an .onnx file in OpenVINO's CPU plugin.

    Raises OpenVINOUnavailable without the package, ValueError (one line naming the file) when OpenVINO cannot
    read or compile the graph. Calls are serialised by the Detector's lock (an infer request is not re-entrant).
    """

    def __init__(self, path: str | Path, threads: int | None = None, max_shapes: int = 4):
        self.path = Path(path)
        ov, self.core = _core()
        self.ov = ov
        self.config = _config(threads)
        try:
            self.model = self.core.read_model(str(self.path))
        except Exception as e:  # noqa: BLE001 - frontend errors: unsupported op, not ONNX
            raise ValueError(f"{self.path}: OpenVINO cannot read it ({_summary(str(e))})") from None
        self.input_name = self.model.inputs[0].get_any_name()
        self._compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._max = max_shapes
        self._lock = threading.Lock()

    def compiled(self, shape: tuple[int, ...]):
        """The compiled model for one static input shape (compiled on first use, LRU of `max_shapes`)."""
        with self._lock:
            cm = self._compiled.get(shape)
            if cm is not None:
                self._compiled.move_to_end(shape)
                return cm
            m = self.model.clone()
            m.reshape({self.input_name: list(shape)})
            try:
                cm = self.core.compile_model(m, "CPU", self.config)
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"{self.path}: OpenVINO cannot compile it "
                                 f"({str(e).strip().splitlines()[0][:160]})") from None
            req = cm.create_infer_request()
            self._compiled[shape] = (cm, req)
            while len(self._compiled) > self._max:
                self._compiled.popitem(last=False)
            return cm, req

    def __call__(self, x: np.ndarray) -> np.ndarray:
        _, req = self.compiled(tuple(x.shape))
        req.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return np.asarray(req.get_output_tensor(0).data, dtype=np.float64).reshape(-1)

    def runtime_precisions(self, shape: tuple[int, ...]) -> dict[str, Counter]:
        """{layer type: Counter(runtimePrecision)} of the compiled model's executed graph, e.g.
        {"Convolution": Counter({"I8": 20, "FP32": 1})} — which convs really run in int8 (U8/I8)."""
        cm, _ = self.compiled(tuple(shape))
        out: dict[str, Counter] = {}
        for op in cm.get_runtime_model().get_ops():
            rt = op.get_rt_info()
            kind = rt["layerType"].astype(str) if "layerType" in rt else op.get_type_name()
            prec = rt["runtimePrecision"].astype(str) if "runtimePrecision" in rt else "?"
            out.setdefault(kind, Counter())[prec] += 1
        return out


def _summary(msg: str) -> str:
    """The useful part of an OpenVINO frontend error (its "Summary:" lines), on one line."""
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    if "Summary:" in lines:
        lines = [ln.lstrip("- ") for ln in lines[lines.index("Summary:") + 1:]]
    else:
        lines = [ln for ln in lines if not ln.startswith(("Exception from", "Check "))] or lines
    return "; ".join(lines)[:200]


def version() -> str | None:
    """The installed OpenVINO version, or None."""
    try:
        import openvino as ov
    except ImportError:
        return None
    return ov.get_version()
