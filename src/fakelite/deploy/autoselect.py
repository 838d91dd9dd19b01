"""`--backend auto`: run a model on the fastest runtime installed on this host, chosen by a short timed probe.

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

from fakelite.deploy.host import host_info, host_key
from fakelite.deploy.samples import cache_dir

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


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:  # a read-only cache only costs a re-probe next time
        pass


def choose_backend(path: str | Path, threads: int | None = None, *,
                   load: Callable[[Path, str, int | None], Any] | None = None,
                   measure: Callable[[Any], float] | None = None,
                   candidates: tuple[str, ...] | None = None, cache: Path | None = None,
                   use_cache: bool = True) -> tuple[Choice, dict[str, Any]]:
    """Pick the fastest installed runtime for the model file `path` on this host.

    load(path, backend, threads) → Detector (default `Detector.load`); measure(det) → median ms (default
    `time_detector` at the model's crop size). Both are parameters so tests can drive the choice with a fake clock.
    Returns (Choice, {backend: loaded Detector}) — the winner's Detector is reused by the caller; the dict is empty
    when the choice came from the cache. Raises ValueError when no candidate can load the file (the reasons joined).
    """
    from fakelite.deploy.runtime import Detector

    path = Path(path)
    load = load or (lambda p, b, t: Detector.load_backend(p, b, t))
    measure = measure or (lambda det: time_detector(det, det.preprocess.crop))
    cands = candidates or CANDIDATES.get(path.suffix.lower(), ())
    if not cands:
        raise ValueError(f"{path}: unknown model type (expected .fakelite, .onnx or .tflite)")
    skipped = {b: "not installed" for b in cands if not installed(b)}
    avail = [b for b in cands if b not in skipped]
    if not avail:
        raise ValueError(f"{path}: no runtime installed for it (" + "; ".join(f"{b}: {r}" for b, r in skipped.items())
                         + ")")
    info = host_info(threads)
    key = f"{host_key(info)}:{file_key(path)}:{threads or 0}"
    cache_path = (cache or cache_dir()) / CACHE_FILE
    if len(avail) > 1 and use_cache:
        hit = _read_cache(cache_path).get(key)
        if isinstance(hit, dict) and hit.get("backend") in avail:
            c = Choice(hit["backend"], hit.get("reason", "cached probe"), hit.get("median_ms", {}),
                       hit.get("skipped", {}), cached=True)
            return c, {}
    loaded: dict[str, Any] = {}
    errors: list[str] = []
    for b in avail:
        try:
            loaded[b] = load(path, b, threads)
        except (ValueError, RuntimeError) as e:  # ArtifactError is a ValueError: this runtime cannot read it
            errors.append(str(e))
            skipped[b] = str(e).removeprefix(f"{path}: ")[:160]
    if not loaded:
        raise ValueError(errors[0])  # every runtime failed: the first one's one-line error (it names the file)
    if len(loaded) == 1:
        (b,) = loaded
        why = NOTES.get(path.suffix.lower(), "the only candidate") if len(cands) == 1 else \
            "the only runtime that can run it here"
        extra = f" ({'; '.join(f'{k}: {v}' for k, v in skipped.items())})" if skipped else ""
        return Choice(b, f"{b}: {why}{extra}", {}, skipped), loaded
    ms = {b: round(float(measure(det)), 3) for b, det in loaded.items()}
    best = min(ms, key=ms.get)
    others = ", ".join(f"{b} {v:.2f} ms" for b, v in sorted(ms.items(), key=lambda kv: kv[1]) if b != best)
    reason = (f"{best}: fastest in a timed probe on this host ({ms[best]:.2f} ms vs {others}; batch 1, "
              f"{threads or 'default'} thread(s), {info['cpu']})")
    choice = Choice(best, reason, ms, skipped)
    if use_cache:
        data = _read_cache(cache_path)
        data[key] = {**choice.to_dict(), "cached": False, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                     "model": str(path), "host": {k: info[k] for k in ("cpu", "flags", "runtimes")}}
        _write_cache(cache_path, data)
    return choice, loaded
