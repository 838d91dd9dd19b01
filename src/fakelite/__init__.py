"""fakelite — train, compress and deploy lightweight deepfake detectors that run in real time on a CPU.

The public face is a few names:

>>> import fakelite
>>> model = fakelite.create_model("npr_resnet23")              # NPR detector (1,437,761 parameters)
>>> qmodel = fakelite.quantize(model, fakelite.QuantConfig(w_bits=2, a_bits=2, quantizer="n2uq", cqb=True))  # doctest: +SKIP
>>> model = fakelite.load("runs/demo/fp/model.fakelite")      # doctest: +SKIP
>>> det = fakelite.Detector.load("runs/demo/fp/model.fakelite")  # doctest: +SKIP
>>> det.predict("face.png")                                     # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

# composition root: the artifact's codecs register themselves when their modules are imported (DESIGN.md §1 rule 7)
from fakelite import artifact
from fakelite.artifact import save
from fakelite.compress import codec as _sparse_codec  # noqa: F401
from fakelite.models import create_model, list_models
from fakelite.packaged import resolve_model
from fakelite.quant import QuantConfig
from fakelite.quant import codec as _quant_codec  # noqa: F401
from fakelite.quant import quantize as _quantize

__version__ = "0.1.0"
__all__ = ["Detector", "QuantConfig", "create_model", "list_models", "load", "quantize", "save"]


def load(path) -> Any:
    """Load a .fakelite file, or a packaged model by name ("default", "default-w4a4", "default-w2a2"), into an
    eval-mode model carrying preprocess, threshold and metadata (fakelite.artifact.load). ArtifactError (one line
    naming the file) on any problem, including a packaged model that is not installed."""
    return artifact.load(resolve_model(path))


def quantize(model, config) -> Any:
    """Swap a model's layers for quantized ones per `config` (a fakelite.QuantConfig). See docs/quantization.md."""
    return _quantize(model, config)


def __getattr__(name: str) -> Any:
    # lazy: importing fakelite must not pull in onnxruntime/cv2 (fakelite.deploy) until they are needed
    if name == "Detector":
        from fakelite.deploy.runtime import Detector

        return Detector
    raise AttributeError(name)
