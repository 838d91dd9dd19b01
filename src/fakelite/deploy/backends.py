"""One vocabulary of runtime backend names, for every command and the library.

Canonical names: `torch` (a .fakelite in PyTorch), `onnxruntime` (an .onnx in ONNX Runtime), `litert` (a .tflite
in LiteRT), `openvino` (an .onnx in OpenVINO), and `auto` (chosen from the file). Older spellings stay accepted
as aliases, so existing scripts keep working: `onnx` and `ort` → onnxruntime, `tflite` → litert, `pytorch` →
torch, `ov` → openvino. Bench names add the graph form after a dash (`onnxruntime-int8`, the older `onnx-int8`).
"""

from __future__ import annotations

RUNTIMES = ("torch", "onnxruntime", "litert", "openvino")
CHOICES = ("auto", *RUNTIMES)
ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime", "tflite": "litert", "pytorch": "torch", "ov": "openvino"}
HELP = ("auto (.onnx: the fastest installed runtime, probed and cached per host) | torch | onnxruntime | litert | "
        "openvino (also accepted: onnx, tflite)")


class UnknownBackend(ValueError):
    """A backend name outside the vocabulary (message: one line listing the choices)."""


def canonical(name: str) -> str:
    """The canonical name of `name` (aliases resolved, case-insensitive). Raises UnknownBackend."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in CHOICES:
        raise UnknownBackend(f"unknown backend {name!r}; choose one of {', '.join(CHOICES)} "
                             f"(aliases: {', '.join(f'{a}={c}' for a, c in ALIASES.items())})")
    return key
