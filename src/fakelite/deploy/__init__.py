"""Deployment: ONNX/LiteRT export, the Detector runtime, image/video detection, streaming and benchmarks.

Heavy dependencies (onnxruntime, cv2, ai-edge-litert) are imported inside the modules that need them, so
`import fakelite.deploy` stays cheap. See docs/deploy.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Detector", "Prediction", "detect_file", "detect_paths", "export_onnx"]


def __getattr__(name: str) -> Any:
    if name in ("Detector", "Prediction"):
        from fakelite.deploy import runtime

        return getattr(runtime, name)
    if name in ("detect_file", "detect_paths"):
        from fakelite.deploy import detect

        return getattr(detect, name)
    if name == "export_onnx":
        from fakelite.deploy.onnx import export_onnx

        return export_onnx
    raise AttributeError(name)
