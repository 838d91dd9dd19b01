"""Import the field's public detector checkpoints into fakelite models (no pickle code ever runs).

Formats (`FORMATS`):
- ``npr`` — NPR (Tan et al., CVPR 2024, github.com/chuangchuangtan/NPR-DeepfakeDetection, networks/resnet.py).
  The official file is a plain state dict of 146 tensors: ResNet-50 cut after layer2 with a 3×3/2 stem and a
  one-logit head named ``fc1`` — our ``npr_resnet23`` (1,437,761 parameters), NPR computed inside the network
  (x − up2(down½(x)), × 2/3 before the stem), ImageNet mean/std.
- ``cnndetection`` — CNNDetection (Wang et al., CVPR 2020, github.com/PeterWang512/CNNDetection): ``{"model":
  state_dict}`` of a torchvision-layout ResNet-50 whose ``fc`` has one output (23,510,081 parameters), RGB input,
  ImageNet mean/std. Its eval.py tests without resizing (``opt.no_resize = True``) and centre-crops 224
  (``transforms.CenterCrop(opt.cropSize)``); training resized the short side to 256 first. We default to the
  evaluation policy; ``resize=256`` gives the training one.
- ``torchvision-resnet`` — any torchvision-layout ResNet-18/34/50 with a one-logit ``fc`` (the many derived
  detectors); RGB input, ImageNet mean/std, centre crop 224, no resize by default.

Key mapping. Our `ResNetDetector` uses torchvision's module names exactly — ``conv1``, ``bn1``,
``layer{1..4}.{j}.{conv1,bn1,conv2,bn2[,conv3,bn3]}``, ``layer{i}.0.downsample.{0,1}`` (1×1 conv, BN), ``fc`` —
and the same block structure (stride on the 3×3 conv of a bottleneck, as torchvision ≥ 0.2 "v1.5"), so the
torchvision mapping is the identity and NPR's only differs in the head (``fc1.*`` → ``fc.*``). Wrappers are
unwrapped first: ``{"model": ...}``, ``{"state_dict": ...}``, ``{"model_state_dict": ...}``, ``{"net": ...}``
(nested too, e.g. a training checkpoint that also stores the optimizer), and a prefix on every key from
DataParallel (``module.``), torch.compile (``_orig_mod.``) or Lightning (``model.``) is stripped.

Safety. Files are read with ``torch.load(..., weights_only=True)`` (tensors, dicts, lists, numbers and strings
only) or as safetensors; a file that needs arbitrary unpickling is refused with one line and nothing in it runs.
Missing, unexpected and mis-shaped keys are reported by name; BatchNorm's ``num_batches_tracked`` counters, absent
from checkpoints saved before PyTorch 0.4.1, are filled with 0 (they do not affect eval-mode outputs) and listed.
After loading, the parameter count is checked against the format's published count and a forward pass must give
one finite logit per image. The source's SHA-256, format, wrapper, prefix and renamed keys go to
``model.provenance["imported"]``, which `fakelite.save` stores in the artifact header.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fakelite.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

from .registry import create_model


class CheckpointError(ValueError):
    """A checkpoint that cannot be imported; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class CheckpointFormat:
    """How one public code base lays out its checkpoint, and what the imported model should look like."""

    name: str
    description: str
    archs: tuple[str, ...]  # fakelite registry names this format can hold
    input: str  # "npr" | "rgb"
    preprocess: Preprocess
    policy: str  # the evaluation crop/resize policy, in words (stored in provenance)
    renames: tuple[tuple[str, str], ...] = ()  # (public key prefix, our key prefix)
    expected_params: dict[str, int] = field(default_factory=dict)  # arch -> published parameter count
    reference: str = ""


FORMATS: dict[str, CheckpointFormat] = {
    "npr": CheckpointFormat(
        name="npr",
        description="NPR (Tan et al., CVPR 2024): plain state dict, ResNet-50 cut after layer2, head fc1",
        archs=("npr_resnet23",),
        input="npr",
        preprocess=Preprocess(crop=224, resize=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, npr=True),
        policy="centre crop 224, no resize (resizing destroys the up-sampling trace NPR reads)",
        renames=(("fc1.", "fc."),),
        expected_params={"npr_resnet23": 1_437_761},
        reference="github.com/chuangchuangtan/NPR-DeepfakeDetection networks/resnet.py",
    ),
    "cnndetection": CheckpointFormat(
        name="cnndetection",
        description="CNNDetection (Wang et al., CVPR 2020): {'model': state_dict}, torchvision ResNet-50, 1-output fc",
        archs=("resnet50",),
        input="rgb",
        preprocess=Preprocess(crop=224, resize=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, npr=False),
        policy="centre crop 224, no resize (CNNDetection eval.py: opt.no_resize = True; resize=256 is its "
               "training-time policy)",
        expected_params={"resnet50": 23_510_081},
        reference="github.com/PeterWang512/CNNDetection networks/resnet.py, eval.py",
    ),
    "torchvision-resnet": CheckpointFormat(
        name="torchvision-resnet",
        description="torchvision-layout ResNet-18/34/50 with a one-logit fc",
        archs=("resnet18", "resnet34", "resnet50"),
        input="rgb",
        preprocess=Preprocess(crop=224, resize=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, npr=False),
        policy="centre crop 224, no resize",
        expected_params={"resnet18": 11_177_025, "resnet34": 21_285_185, "resnet50": 23_510_081},
        reference="torchvision/models/resnet.py",
    ),
}

WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "net", "network")
STRIP_PREFIXES = ("module.", "_orig_mod.", "model.")
# (block kind, blocks per stage) -> registry name, for torchvision-layout ResNets
RESNET_LAYOUTS = {("basic", (2, 2, 2, 2)): "resnet18", ("basic", (3, 4, 6, 3)): "resnet34",
                  ("bottleneck", (3, 4, 6, 3)): "resnet50"}


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _names(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … {len(keys) - limit} more" if len(keys) > limit else "")


def _is_safetensors(head: bytes) -> bool:
    if len(head) < 10:
        return False
    hlen = int.from_bytes(head[:8], "little")
    return 0 < hlen < (1 << 31) and head[8:9] == b"{"


def load_checkpoint_safely(path: str | Path) -> Any:
    """The object stored in `path`, read without running any code from it.

    PyTorch files go through ``torch.load(map_location="cpu", weights_only=True)``; safetensors files through
    `safetensors.torch.load_file`. Raises CheckpointError (one line) for a missing/unreadable file, a file whose
    pickle needs arbitrary globals (refused: nothing in it runs), or a file that is not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    if _is_safetensors(head):
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001 - any parse failure is "not a valid safetensors file"
            raise CheckpointError(f"{path}: not a valid safetensors file ({_first_line(e)})") from None
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing: one line is enough
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
        if m or "Unsupported class" in msg:
            what = f"it references {m.group(1)}" if m else "it references a class that is not a tensor type"
            raise CheckpointError(f"{path}: refused: the file needs arbitrary unpickling ({what}); fakelite only "
                                  "loads tensors (torch.load weights_only=True), nothing in it was run") from None
        detail = msg.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({(detail or ['unreadable pickle'])[0][:120]})") from None
    except Exception as e:  # noqa: BLE001 - zip/pickle framing errors of every kind mean "not a checkpoint"
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0][:160] if s else type(e).__name__)


def extract_state_dict(obj: Any, name: str = "<checkpoint>") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Unwrap `obj` to a flat {key: tensor} state dict and strip a common DataParallel/compile/Lightning prefix.

    Returns (state, info) with info = {"wrapper": ["model", ...] (the keys descended through), "prefix": the
    stripped prefix or None, "ignored": non-tensor entries of the state dict}. Raises CheckpointError.
    """
    path: list[str] = []
    while isinstance(obj, dict) and obj and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        path.append(key)
        obj = obj[key]
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        top = _names([str(k) for k in obj][:20]) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{name}: no state dict of tensors found (top level: {top}; expected a state dict "
                              f"or one wrapped as {', '.join(repr(k) for k in WRAPPER_KEYS)})")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    ignored = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    prefix = None
    for p in STRIP_PREFIXES:
        while state and all(k.startswith(p) for k in state):
            state = {k[len(p):]: v for k, v in state.items()}
            prefix = (prefix or "") + p
    return state, {"wrapper": path, "prefix": prefix, "ignored": ignored}


def map_keys(state: dict[str, torch.Tensor], fmt: CheckpointFormat) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Rename public keys to fakelite's (`fmt.renames`, prefix by prefix). Returns (state, {old: new})."""
    out: dict[str, torch.Tensor] = {}
    renamed: dict[str, str] = {}
    for k, v in state.items():
        new = k
        for old_p, new_p in fmt.renames:
            if k.startswith(old_p):
                new = new_p + k[len(old_p):]
                break
        if new != k:
            renamed[k] = new
        out[new] = v
    return out, renamed


def infer_resnet_arch(state: dict[str, torch.Tensor], name: str = "<checkpoint>") -> str:
    """resnet18/34/50 from the keys of a torchvision-layout state dict (block kind and blocks per stage)."""
    counts: dict[int, set[int]] = {}
    for k in state:
        m = re.match(r"layer(\d+)\.(\d+)\.", k)
        if m:
            counts.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    layout = tuple(len(counts[i]) for i in sorted(counts))
    kind = "bottleneck" if any(re.match(r"layer\d+\.\d+\.conv3\.", k) for k in state) else "basic"
    arch = RESNET_LAYOUTS.get((kind, layout))
    if arch is None:
        raise CheckpointError(f"{name}: not a torchvision ResNet-18/34/50 ({kind} blocks per stage {list(layout)}); "
                              "pass --arch or use another --format")
    return arch


def check_fit(model: nn.Module, state: dict[str, torch.Tensor], name: str, fmt_name: str,
              arch: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Compare `state` with `model`'s: one-line CheckpointError naming missing, unexpected and mis-shaped keys.

    Returns (state ready for `load_state_dict(strict=True)`, keys filled in): floating tensors are cast to the
    model's dtype, and absent ``num_batches_tracked`` buffers are filled with 0.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    filled = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if k not in filled]
    unexpected = [k for k in state if k not in expected]
    misshaped = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} ({_names(missing)})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} ({_names(unexpected)})")
        if misshaped:
            parts.append(f"mis-shaped {len(misshaped)} (" + _names(
                [f"{k}: {list(state[k].shape)} vs {list(expected[k].shape)}" for k in misshaped], 4) + ")")
        hint = ""
        head = [k for k in misshaped if k.startswith("fc.")]
        if head and state[head[0]].shape[0] != 1:
            hint = f"; the head has {state[head[0]].shape[0]} outputs, fakelite detectors have one logit"
        elif any(k.startswith("fc1.") for k in unexpected) and fmt_name != "npr":
            hint = "; a head named fc1 is NPR's: try --format npr"
        raise CheckpointError(f"{name}: does not fit {arch} (--format {fmt_name}): " + "; ".join(parts) + hint)
    out: dict[str, torch.Tensor] = {}
    for k, ref in expected.items():
        if k in filled:
            out[k] = torch.zeros_like(ref)
            continue
        v = state[k]
        if v.dtype != ref.dtype:
            if v.is_floating_point() != ref.is_floating_point():
                raise CheckpointError(f"{name}: tensor {k} has dtype {v.dtype}, expected {ref.dtype}")
            v = v.to(ref.dtype)
        out[k] = v
    return out, filled


def import_checkpoint(path: str | Path, format: str, arch: str | None = None, *, input: str | None = None,
                      crop: int | None = None, resize: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build a fakelite model holding a public checkpoint's weights.

    path: a PyTorch (.pth/.pt, zip or legacy) or safetensors file. format: a key of `FORMATS`. arch: registry name
    (default: the format's only arch, or inferred from the keys for ``torchvision-resnet``). input: "rgb"/"npr"
    override. crop/resize: preprocessing overrides (resize=0 means no resize).
    Returns (eval-mode model with `provenance["imported"]` set, the same report dict). The logits equal those of the
    public code's network on the same normalised input (tests/test_checkpoint_import.py checks bit-identity).
    Raises CheckpointError (one line) for every failure: unsafe or unreadable file, wrong layout (keys named),
    parameter-count or output-shape mismatch.
    """
    path = Path(path)
    if format not in FORMATS:
        raise CheckpointError(f"unknown --format {format!r}; choose one of: {', '.join(FORMATS)}")
    fmt = FORMATS[format]
    obj = load_checkpoint_safely(path)
    state, info = extract_state_dict(obj, str(path))
    del obj
    state, renamed = map_keys(state, fmt)
    if arch is None:
        arch = fmt.archs[0] if len(fmt.archs) == 1 else infer_resnet_arch(state, str(path))
    if arch not in fmt.archs:
        raise CheckpointError(f"{path}: --arch {arch!r} is not a {format} architecture (choose: {', '.join(fmt.archs)})")
    inp = input or fmt.input
    model = create_model(arch, input=inp)
    state, filled = check_fit(model, state, str(path), format, arch)
    model.load_state_dict(state, strict=True)
    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    want = fmt.expected_params.get(arch)
    if want is not None and n_params != want:
        raise CheckpointError(f"{path}: {arch} has {n_params:,} parameters, the {format} network has {want:,}")
    pre = replace(fmt.preprocess, npr=inp == "npr")
    if crop is not None:
        pre = replace(pre, crop=int(crop))
    if resize is not None:
        pre = replace(pre, resize=int(resize) or None)
    model.preprocess = pre
    with torch.no_grad():
        y = model(torch.randn(2, 3, pre.crop, pre.crop, generator=torch.Generator().manual_seed(0)))
    if tuple(y.shape) != (2, 1) or not bool(torch.isfinite(y).all()):
        raise CheckpointError(f"{path}: the imported network gives output shape {list(y.shape)} "
                              f"({'finite' if bool(torch.isfinite(y).all()) else 'non-finite'}); expected one finite "
                              "logit per image")
    policy = fmt.policy
    if crop is not None or resize is not None:
        policy = f"centre crop {pre.crop}, " + (f"short side resized to {pre.resize} first" if pre.resize
                                                  else "no resize") + " (set at import)"
    report: dict[str, Any] = {
        "format": format, "source": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size,
        "arch": arch, "input": inp, "tensors": len(state) - len(filled), "params": n_params,
        "wrapper": info["wrapper"], "prefix_stripped": info["prefix"], "ignored_entries": info["ignored"],
        "renamed": renamed, "filled_buffers": filled, "preprocess_policy": policy, "reference": fmt.reference,
        "output_shape_check": [2, 1],
    }
    model.provenance = {"imported": report}
    model.threshold = 0.5
    return model, report


def format_help() -> str:
    """One line per format, for the command's help."""
    return "; ".join(f"{f.name}: {f.description}" for f in FORMATS.values())

