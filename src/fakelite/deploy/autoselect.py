"""`--backend auto`: the probe's parts — candidates per file type, timing, and the cache per host and model.

The choice itself is `fakelite.deploy.runtime.choose_backend` (it loads the candidates as Detectors).

Which runtime is fastest depends on the host (VNNI/AMX/AVX2-only, Arm), the runtime versions and the graph
(FP32, ORT integer graph, QDQ), so it is measured, not assumed: every candidate runtime that can read the file
is loaded, warmed up and timed on a batch of 1 at the model's crop size; the lowest median wins. The result is
cached per host (`host.host_key`: CPU model, flags, runtime versions), model file (content hash) and thread
count in ``$FAKELITE_CACHE/backend_probe.json`` (default ``~/.cache/fakelite``), so later loads skip the probe.

Candidates by file type: ``.onnx`` → onnxruntime and openvino (OpenVINO cannot read the ORT integer graph's
``com.microsoft`` op; that candidate then drops out with its reason); ``.fakelite`` → torch (the artifact's
reference graph; export it for the other runtimes); ``.tflite`` → litert.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CACHE_FILE = "backend_probe.json"
CANDIDATES = {".onnx": ("onnxruntime", "openvino"), ".fakelite": ("torch",), ".tflite": ("litert",)}
NOTES = {".fakelite": "a .fakelite runs in PyTorch (its reference graph); `fakelite export` it to .onnx for the "
                      "faster runtimes", ".tflite": "a .tflite runs in LiteRT"}


@dataclass
class Choice:
    """The outcome of `choose_backend`: backend, a one-line reason, the probe's medians (ms) and skips."""

    backend: str
    reason: str
    median_ms: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "reason": self.reason, "median_ms": self.median_ms, "skipped": self.skipped,
                "cached": self.cached}


def installed(backend: str) -> bool:
    """Whether the runtime package of `backend` imports here (without importing it)."""
    from importlib.util import find_spec

    mod = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino", "litert": "ai_edge_litert"}[backend]
    return find_spec(mod) is not None


def file_key(path: Path) -> str:
    """sha256 (16 hex) of the model file's bytes: the probe is per model, not per file name."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def time_detector(det: Any, size: int, warmup: int = 2, runs: int = 7,
                  timer: Callable[[], float] = time.perf_counter) -> float:
    """Median ms of `det.logits` on one random (1, 3, size, size) input after `warmup` calls."""
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    for _ in range(warmup):
        det.logits(x)
    t = []
    for _ in range(runs):
        t0 = timer()
        det.logits(x)
        t.append(timer() - t0)
    return float(np.median(t) * 1e3)


def read_cache(path: Path) -> dict[str, Any]:
    """The probe cache {key: choice} at `path` ({} when missing or unreadable)."""
    try:
        d = json.loads(path.read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def write_cache(path: Path, data: dict[str, Any]) -> None:
    """Replace the probe cache at `path` atomically (a read-only cache is skipped silently)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:  # a read-only cache only costs a re-probe next time
        pass
