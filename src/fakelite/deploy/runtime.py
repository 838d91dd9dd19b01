"""`fakelite.Detector`: one inference class over four backends (PyTorch, ONNX Runtime, OpenVINO, LiteRT).

The artifact decides everything about preprocessing (crop, normalisation, NPR, the scoring policy of large images:
one centre crop, resize-then-crop, or aggregated tiles; see `set_scoring`), the temperature and the threshold:
a .fakelite carries its header, an exported .onnx embeds the same header in metadata_props, a .tflite carries it
in a sidecar `<file>.tflite.json` written by `fakelite export --format tflite`.

Thread safety: `predict*` may be called from many threads at once (the HTTP service shares one Detector).
Preprocessing runs unlocked; the backend call is serialised by a lock for torch and LiteRT (their modules /
interpreters are not re-entrant; an OpenVINO infer request neither) and left unlocked for ONNX Runtime
(InferenceSession.run is thread-safe).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fakelite.artifact import ArtifactError
from fakelite.artifact import load as load_artifact
from fakelite.data.io import BadInput, load_rgb, to_rgb
from fakelite.data.preprocess import Preprocess
from fakelite.data.transforms import aggregate_logits, eval_tensors, eval_transform
from fakelite.deploy.autoselect import (
    CACHE_FILE,
    CANDIDATES,
    NOTES,
    Choice,
    file_key,
    installed,
    read_cache,
    time_detector,
    write_cache,
)
from fakelite.deploy.backends import ALIASES, RUNTIMES
from fakelite.deploy.host import host_info, host_key
from fakelite.deploy.litert import open_interpreter, read_sidecar
from fakelite.deploy.onnx_graph import ort_disabled_optimizers, read_metadata
from fakelite.deploy.openvino import OpenVINORunner
from fakelite.deploy.samples import cache_dir
from fakelite.packaged import resolve_model

_SUFFIX = {".fakelite": "torch", ".onnx": "onnxruntime", ".tflite": "litert"}


@dataclass
class Prediction:
    """One verdict: score = P(fake) = sigmoid(logit / T) (T: the artifact's temperature, 1 unless calibrated);
    label "fake" when score ≥ the model's threshold. logit: the image's aggregated logit (scoring policy)."""

    score: float
    label: str  # "real" | "fake"
    logit: float


def _sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    return np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))


def _short_hash(header: dict[str, Any]) -> str:
    h = header.get("content_hash") or ""
    if not h:
        h = hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()
    return h[:8]


class Detector:
    """Load once, predict many: `Detector.load("model.fakelite").predict("face.png")`."""

    def __init__(self, backend: str, runner: Any, header: dict[str, Any], path: Path, threads: int | None,
                 lock_backend: bool):
        self.backend = backend
        self._run = runner
        self.header = header
        self.path = Path(path)
        self.threads = threads
        self.preprocess = Preprocess.from_dict(header.get("preprocess", {}))
        self.threshold = float(header.get("threshold", 0.5))
        self.threshold_source = header.get("threshold_source")
        self.temperature = float(header.get("temperature") or 1.0)  # score = sigmoid(logit / T)
        arch = header.get("arch", {}).get("name", "model")
        kind = header.get("export", {}).get("kind")
        suffix = f"-{kind}" if kind and kind != "fp32" else ""
        self.model_id = f"{arch}-{_short_hash(header)}{suffix}"
        self._lock = threading.Lock() if lock_backend else None
        self.backend_reason = f"{backend} requested"  # why this backend runs the model (`--backend auto` fills it)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path, backend: str = "auto", threads: int | None = None) -> Detector:
        """Open a .fakelite (torch), .onnx (onnxruntime or openvino) or .tflite (litert) file.

        backend "auto": a .onnx runs on the fastest installed runtime that can read it, by a short timed probe
        cached per host and model (`choose_backend`, `fakelite.deploy.autoselect`); a .fakelite runs in torch, a .tflite in litert.
        `det.backend_reason` says what was picked and why. Aliases: onnx → onnxruntime, tflite → litert.
        Raises fakelite.artifact.ArtifactError (a ValueError) with one line naming the file on any problem.
        """
        path = resolve_model(path)  # a packaged name ("default", ...) → its file
        backend = ALIASES.get(backend, backend)
        if backend != "auto" and backend not in RUNTIMES:
            raise ArtifactError(f"unknown backend {backend!r}; choose one of auto, {', '.join(RUNTIMES)}")
        if not path.is_file():
            raise ArtifactError(f"{path}: no such model file")
        if backend != "auto":
            return cls.load_backend(path, backend, threads)
        if path.suffix.lower() not in _SUFFIX:
            raise ArtifactError(f"{path}: unknown model type (expected .fakelite, .onnx or .tflite)")
        try:
            choice, loaded = choose_backend(path, threads)
        except ValueError as e:
            raise ArtifactError(str(e)) from None
        det = loaded.get(choice.backend) or cls.load_backend(path, choice.backend, threads)
        det.backend_reason = choice.reason + (" (cached probe)" if choice.cached else "")
        det.backend_choice = choice.to_dict()
        return det

    @classmethod
    def load_backend(cls, path: Path, backend: str, threads: int | None) -> Detector:
        """Load `path` on one named backend (no choice)."""
        if backend == "torch":
            return cls._load_torch(path, threads)
        if backend == "onnxruntime":
            return cls._load_onnx(path, threads)
        if backend == "openvino":
            return cls._load_openvino(path, threads)
        return cls._load_litert(path, threads)

    @classmethod
    def _load_torch(cls, path: Path, threads: int | None) -> Detector:
        import torch

        if path.suffix.lower() != ".fakelite":
            raise ArtifactError(f"{path}: the torch backend reads .fakelite files")
        if threads:
            torch.set_num_threads(threads)
        model = load_artifact(path)

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(x)).reshape(-1).double().numpy()

        det = cls("torch", run, model.header, path, threads, lock_backend=True)
        det.model = model
        return det

    @classmethod
    def _load_onnx(cls, path: Path, threads: int | None) -> Detector:
        import onnxruntime as ort

        try:
            header = read_metadata(path)
        except ValueError as e:
            raise ArtifactError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - protobuf errors: not an ONNX file
            raise ArtifactError(f"{path}: not a valid ONNX file ({str(e).splitlines()[0][:100]})") from None
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        try:
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                        disabled_optimizers=ort_disabled_optimizers(header))
        except Exception as e:  # noqa: BLE001
            raise ArtifactError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:120]})") from None
        name = sess.get_inputs()[0].name

        def run(x: np.ndarray) -> np.ndarray:
            return np.asarray(sess.run(None, {name: x})[0], dtype=np.float64).reshape(-1)

        det = cls("onnxruntime", run, header, path, threads, lock_backend=False)
        det.session = sess
        return det

    @classmethod
    def _load_openvino(cls, path: Path, threads: int | None) -> Detector:
        if path.suffix.lower() != ".onnx":
            raise ArtifactError(f"{path}: the openvino backend reads .onnx files (fakelite export --format onnx-qdq)")
        try:
            header = read_metadata(path)
            runner = OpenVINORunner(path, threads)
        except ValueError as e:
            raise ArtifactError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - protobuf errors: not an ONNX file
            raise ArtifactError(f"{path}: not a valid ONNX file ({str(e).splitlines()[0][:100]})") from None
        det = cls("openvino", runner, header, path, threads, lock_backend=True)
        det.ov_runner = runner
        return det

    @classmethod
    def _load_litert(cls, path: Path, threads: int | None) -> Detector:
        header = read_sidecar(path)
        interp = open_interpreter(path, threads)
        inp = interp.get_input_details()[0]
        out = interp.get_output_details()[0]

        def run(x: np.ndarray) -> np.ndarray:
            res = []
            for i in range(len(x)):  # LiteRT graphs have a static batch of 1
                xi = x[i : i + 1]
                if tuple(inp["shape"]) != xi.shape:
                    interp.resize_tensor_input(inp["index"], xi.shape)
                    interp.allocate_tensors()
                if inp["dtype"] != np.float32:
                    s, z = inp["quantization"]
                    xi = np.clip(np.round(xi / s + z), np.iinfo(inp["dtype"]).min, np.iinfo(inp["dtype"]).max)
                interp.set_tensor(inp["index"], xi.astype(inp["dtype"]))
                interp.invoke()
                y = interp.get_tensor(out["index"]).astype(np.float64)
                if out["dtype"] != np.float32:
                    s, z = out["quantization"]
                    y = (y - z) * s
                res.append(y.reshape(-1))
            return np.concatenate(res)

        if header is None:
            raise ArtifactError(f"{path}: no {path.name}.json sidecar with the fakelite header next to it")
        return cls("litert", run, header, path, threads, lock_backend=True)

    # ------------------------------------------------------------------ inference
    def _to_array(self, x: Any) -> np.ndarray:
        if isinstance(x, str | Path):
            return load_rgb(x)
        if isinstance(x, np.ndarray):
            if x.ndim == 2:
                x = np.repeat(x[..., None], 3, axis=2)
            if x.ndim != 3 or x.shape[2] not in (3, 4) or x.shape[0] < 2 or x.shape[1] < 2:
                raise BadInput("<array>", f"expected an H×W×3 uint8 RGB array, got shape {tuple(x.shape)}")
            if x.dtype != np.uint8:
                raise BadInput("<array>", f"expected uint8 pixels, got {x.dtype}")
            return np.ascontiguousarray(x[..., :3])
        try:
            from PIL import Image

            if isinstance(x, Image.Image):
                return to_rgb(x)
        except ImportError:  # pragma: no cover
            pass
        raise BadInput("<input>", f"cannot predict on a {type(x).__name__} (give a path, an array or a PIL image)")

    def tensor(self, img: np.ndarray) -> np.ndarray:
        """Preprocess one RGB uint8 image into the model's (3, H, W) float32 input (the artifact's recipe; under the
        "tiles" policy the centre tile — `crops` gives all of them)."""
        return eval_transform(img, self.preprocess).numpy()

    def crops(self, img: np.ndarray) -> np.ndarray:
        """Every crop the scoring policy takes of one RGB uint8 image, as a (K, 3, H, W) float32 array
        (fakelite.data.transforms.eval_crops: K = 1 for "center" and "resize256")."""
        return eval_tensors(img, self.preprocess).numpy()

    def set_scoring(self, policy: str | None = None, aggregate: str | None = None, topk: int | None = None,
                    max_tiles: int | None = None) -> Detector:
        """Override the stored scoring policy / aggregation (None keeps the artifact's); ValueError on a bad
        name. Returns self."""
        self.preprocess = self.preprocess.with_scoring(policy, aggregate, topk, max_tiles)
        return self

    def image_logits(self, imgs: Sequence[np.ndarray]) -> np.ndarray:
        """One logit per RGB uint8 image: the policy's crops of all images are scored in shape-grouped batches,
        then each image's crop logits are combined by `aggregate_logits` (float64, shape (N,))."""
        per_image = [self.crops(img) for img in imgs]
        flat = [c for cs in per_image for c in cs]
        z = self._logits_of(flat)
        out, start = np.empty(len(per_image), dtype=np.float64), 0
        for j, cs in enumerate(per_image):
            out[j] = aggregate_logits(z[start : start + len(cs)], self.preprocess)
            start += len(cs)
        return out

    def scores(self, logits: np.ndarray) -> np.ndarray:
        """P(fake) = sigmoid(logit / T) with the artifact's temperature T (float64)."""
        return _sigmoid(np.asarray(logits, dtype=np.float64) / self.temperature)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw logits of an already preprocessed (N, 3, H, W) float32 batch."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._lock is None:
            return self._run(batch)
        with self._lock:
            return self._run(batch)

    def as_module(self):
        """This detector as a torch module (logits of preprocessed batches, `.preprocess`, `.threshold`), so the
        evaluation code scores the deployed file itself: `fakelite eval --model model.onnx` measures what runs."""
        import torch

        det = self

        class _Deployed(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.preprocess, self.threshold, self.header = det.preprocess, det.threshold, det.header
                self.temperature, self.threshold_source = det.temperature, det.threshold_source

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(det.logits(x.detach().cpu().numpy()).astype(np.float32)).reshape(-1, 1)

        return _Deployed().eval()

    def _logits_of(self, tensors: list[np.ndarray]) -> np.ndarray:
        out = np.empty(len(tensors), dtype=np.float64)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, t in enumerate(tensors):
            groups.setdefault(t.shape, []).append(i)
        for idx in groups.values():  # images of one size share a batch
            out[idx] = self.logits(np.stack([tensors[i] for i in idx]))
        return out

    def _prediction(self, logit: float) -> Prediction:
        score = float(self.scores(logit))
        return Prediction(score=score, label="fake" if score >= self.threshold else "real", logit=float(logit))

    def predict(self, x: str | Path | np.ndarray | Any) -> Prediction:
        """Score one image: a path (decoded with load_rgb), an H×W×3 uint8 RGB array, or a PIL image."""
        return self._prediction(self.image_logits([self._to_array(x)])[0])

    def predict_batch(self, xs: Sequence[Any]) -> list[Prediction]:
        """Score many images (same inputs as `predict`); raises BadInput on the first unusable one."""
        return [self._prediction(z) for z in self.image_logits([self._to_array(x) for x in xs])]

    def predict_arrays(self, imgs: list[np.ndarray]) -> np.ndarray:
        """Scores (P(fake), float64) of RGB uint8 arrays, e.g. face crops."""
        if not len(imgs):
            return np.zeros(0)
        return self.scores(self.image_logits([self._to_array(x) for x in imgs]))

    def __repr__(self) -> str:
        return f"Detector({self.model_id}, backend={self.backend}, threshold={self.threshold:.4f})"


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
        hit = read_cache(cache_path).get(key)
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
        data = read_cache(cache_path)
        data[key] = {**choice.to_dict(), "cached": False, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                     "model": str(path), "host": {k: info[k] for k in ("cpu", "flags", "runtimes")}}
        write_cache(cache_path, data)
    return choice, loaded
