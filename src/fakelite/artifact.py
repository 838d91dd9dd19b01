"""The .fakelite artifact: one safetensors file, a JSON metadata header, no pickle anywhere.

Header (safetensors metadata key "fakelite", a JSON string):
  format_version, arch {name, kwargs, pruned?}, preprocess {...}, threshold, threshold_source, temperature, quant
  (null or the quantization config and per-layer plan, written by fakelite.quant), packing (how tensors were
  packed: low-bit codes, sparse masks), provenance {...}, metrics {...}, extra {...}, tensors {name: shape},
  content_hash (sha256 over tensor names, dtypes, shapes and bytes), header_hash.
Writes are atomic (temp file + fsync + rename) so a crash never leaves a half-written artifact.

The artifact knows no producer. A structurally pruned model (`model.fakelite_pruned`) records its layer shapes
(fakelite.models.shapes) in arch["pruned"]; every other way of storing tensors is a *codec* registered with
`register_codec` by the package that owns it — fakelite.quant.codec (bit-packed low-bit weights, the quantized
structure rebuilt from header["quant"]) and fakelite.compress.codec (unstructured sparsity as bit mask + values).
`fakelite/__init__.py` imports both, so any `import fakelite...` has them registered.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from fakelite.data.preprocess import Preprocess
from fakelite.models.registry import create_model
from fakelite.models.shapes import module_spec, reshape_to_spec
from fakelite.utils.files import atomic_write_bytes

FORMAT_VERSION = 1
META_KEY = "fakelite"


class ArtifactError(ValueError):
    """A .fakelite file that cannot be used (missing, not safetensors, wrong version, tampered...)."""


class CodecError(ValueError):
    """Raised by a codec's `decode` for stored tensors it cannot decode; `build` turns it into an ArtifactError
    naming the file ("<file>: <message>")."""


class Codec(Protocol):
    """How one kind of model stores its tensors in (and is rebuilt from) a .fakelite file.

    `encodes(model)`: this codec stores `model`'s tensors. `encode(model)` → (tensors to store, header part): the
    part's keys ("packing", "quant", ...) overwrite the header's defaults (null). `decodes(header)`: the file was
    written by this codec. `rebuild(model, header)` → the model with the structure the stored state needs (e.g.
    quantized layers), before the strict state-dict load. `decode(tensors, header)` → the state dict (exactly the
    rebuilt model's keys); it may raise CodecError (one line, without the file name)."""

    name: str

    def encodes(self, model: nn.Module) -> bool: ...

    def encode(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]: ...

    def decodes(self, header: dict[str, Any]) -> bool: ...

    def rebuild(self, model: nn.Module, header: dict[str, Any]) -> nn.Module: ...

    def decode(self, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> dict[str, torch.Tensor]: ...


_CODECS: dict[str, tuple[int, Codec]] = {}


def register_codec(codec: Codec, *, priority: int = 0) -> Codec:
    """Register `codec` under `codec.name` (re-registering a name replaces it). For saving and loading the codecs
    are asked in order of decreasing `priority`; the first whose `encodes`/`decodes` says yes is used, and a
    model no codec claims is stored as its plain state dict."""
    _CODECS[codec.name] = (priority, codec)
    return codec


def codecs() -> list[Codec]:
    """The registered codecs, in the order they are asked (highest priority first)."""
    return [c for _, c in sorted(_CODECS.values(), key=lambda pc: -pc[0])]


def content_hash(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def header_hash(header: dict[str, Any]) -> str:
    """sha256 of the header's canonical JSON without its own `header_hash` key: a tampered threshold, architecture
    or quantization plan is refused as surely as tampered tensor bytes (content_hash)."""
    body = {k: v for k, v in header.items() if k != "header_hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def jsonable(x: Any) -> Any:
    """`x` with tensors, numpy scalars and paths turned into JSON types (dict keys become strings)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item") and callable(x.item):
        return x.item()
    return x


def model_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State tensors to store, and the header part of the codec that encoded them ({} for a plain state dict)."""
    for codec in codecs():
        if codec.encodes(model):
            return codec.encode(model)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, {}


def _pruned_arch(model: nn.Module) -> dict[str, Any]:
    """A structurally pruned model records its layer shapes as arch["pruned"] (fakelite.models.shapes)."""
    if not getattr(model, "fakelite_pruned", False):
        return {}
    return {"pruned": module_spec(model)}


def to_bytes(model: nn.Module, *, threshold: float | None = None, provenance: dict | None = None,
             metrics: dict | None = None, extra: dict | None = None) -> bytes:
    """Serialise a registry model (optionally quantized) into .fakelite bytes."""
    if not hasattr(model, "arch_name"):
        raise ArtifactError("model was not built by fakelite.create_model (no arch_name): cannot be saved")
    tensors, part = model_tensors(model)
    header = {
        "format_version": FORMAT_VERSION,
        "arch": {"name": model.arch_name, "kwargs": jsonable(model.arch_kwargs), **_pruned_arch(model)},
        "preprocess": model.preprocess.to_dict(),
        "threshold": float(threshold if threshold is not None else getattr(model, "threshold", 0.5)),
        # where the threshold came from (fakelite.eval.calibration; null: chosen in training) and the temperature T
        # of score = sigmoid(logit / T) (1: uncalibrated logits). Absent in older files: read as null and 1.
        "threshold_source": jsonable(getattr(model, "threshold_source", None)),
        "temperature": float(getattr(model, "temperature", 1.0) or 1.0),
        "quant": None,  # a codec's header part fills these two (fakelite.quant.codec, fakelite.compress.codec)
        "packing": None,
        "provenance": jsonable(provenance or getattr(model, "provenance", {}) or {}),
        "metrics": jsonable(metrics or getattr(model, "metrics", {}) or {}),
        "extra": jsonable(extra or getattr(model, "extra_meta", {}) or {}),
    }
    header.update({k: jsonable(v) for k, v in part.items()})
    header["tensors"] = {k: list(v.shape) for k, v in tensors.items()}
    header["content_hash"] = content_hash(tensors)
    header["header_hash"] = header_hash(header)
    return st_save(tensors, metadata={META_KEY: json.dumps(header)})


def save(model: nn.Module, path: str | os.PathLike, **kwargs: Any) -> Path:
    """Write `model` to `path` atomically. Keyword args as in `to_bytes`."""
    path = Path(path)
    atomic_write_bytes(path, to_bytes(model, **kwargs))
    return path


def read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and verify header and tensors; raises ArtifactError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such model file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({e.strerror})") from None
    return parse(data, str(path))


def parse(data: bytes, name: str = "<bytes>") -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Verify and decode .fakelite bytes: safetensors framing, fakelite header, format version, header hash,
    tensor names and shapes, content hash. Never unpickles anything (a pickle is just 'not safetensors')."""
    if len(data) < 8:
        raise ArtifactError(f"{name}: not a valid .fakelite (safetensors) file: only {len(data)} bytes")
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen > len(data) - 8:
        raise ArtifactError(f"{name}: not a valid .fakelite (safetensors) file: header length {hlen} exceeds the "
                            f"file size {len(data)} (truncated or not safetensors)")
    try:
        tensors = st_load(data)
    except (SafetensorError, Exception) as e:  # noqa: BLE001 - any parse failure means "not a valid file"
        msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise ArtifactError(f"{name}: not a valid .fakelite (safetensors) file: {msg}") from None
    try:
        raw = json.loads(data[8 : 8 + hlen]).get("__metadata__") or {}
    except (ValueError, AttributeError):
        raise ArtifactError(f"{name}: not a valid .fakelite (safetensors) file: unreadable header") from None
    if META_KEY not in raw:
        raise ArtifactError(f"{name}: safetensors file without fakelite metadata (not a fakelite model)")
    try:
        header = json.loads(raw[META_KEY])
    except (json.JSONDecodeError, TypeError):
        raise ArtifactError(f"{name}: fakelite metadata is not valid JSON") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{name}: fakelite metadata is not a JSON object (file altered)")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{name}: unsupported format version {version!r} (this fakelite reads {FORMAT_VERSION})")
    if "header_hash" in header and header["header_hash"] != header_hash(header):
        raise ArtifactError(f"{name}: header hash mismatch (metadata altered after saving)")
    arch, pre = header.get("arch"), header.get("preprocess")
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str) or not isinstance(pre, dict):
        raise ArtifactError(f"{name}: header lacks a valid 'arch' or 'preprocess' section (file altered)")
    expected = header.get("tensors", {})
    if not isinstance(expected, dict):
        raise ArtifactError(f"{name}: header's tensor list is not a mapping (file altered)")
    if set(expected) != set(tensors):
        raise ArtifactError(f"{name}: tensor list does not match the header (file altered or truncated)")
    for k, shape in expected.items():
        if list(tensors[k].shape) != list(shape):
            raise ArtifactError(f"{name}: tensor {k} has shape {list(tensors[k].shape)}, header says {shape}")
    if header.get("content_hash") != content_hash(tensors):
        raise ArtifactError(f"{name}: content hash mismatch (file altered or corrupted)")
    return header, tensors


def build(header: dict[str, Any], tensors: dict[str, torch.Tensor], name: str = "<bytes>") -> nn.Module:
    """Rebuild the exact model described by a verified header and its tensors: the registry model, its pruned
    shapes, then the codec that wrote the file (if any) rebuilds its structure and decodes the state dict."""
    arch = header["arch"]
    try:
        model = create_model(arch["name"], **arch.get("kwargs", {}))
    except (KeyError, TypeError) as e:
        raise ArtifactError(f"{name}: cannot rebuild architecture {arch.get('name')!r}: {e}") from None
    model.preprocess = Preprocess.from_dict(header["preprocess"])
    if arch.get("pruned"):  # give a structurally pruned model its stored layer shapes
        try:
            reshape_to_spec(model, arch["pruned"])
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{name}: cannot rebuild the pruned shapes: {e}") from None
    state = tensors
    codec = next((c for c in codecs() if c.decodes(header)), None)
    if codec is not None:
        model = codec.rebuild(model, header)
        try:
            state = codec.decode(tensors, header)
        except CodecError as e:
            raise ArtifactError(f"{name}: {e}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"{name}: tensors do not fit the architecture: {str(e).splitlines()[0][:160]}") from None
    model.threshold = float(header.get("threshold", 0.5))
    model.threshold_source = header.get("threshold_source")
    model.temperature = float(header.get("temperature") or 1.0)
    model.provenance = header.get("provenance", {})
    model.metrics = header.get("metrics", {})
    model.extra_meta = header.get("extra", {})
    model.header = header
    model.eval()
    return model


def load(path: str | os.PathLike) -> nn.Module:
    """Load a .fakelite file into an eval-mode model carrying preprocess, threshold and metadata.

    >>> model = load("runs/demo/fp/model.fakelite")   # doctest: +SKIP
    >>> model.threshold, model.preprocess.crop           # doctest: +SKIP
    """
    header, tensors = read(path)
    return build(header, tensors, str(path))
