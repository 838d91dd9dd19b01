"""Detectors in plain torch, behind a registry whose entries carry their preprocessing.

The composition root of the models (as timm's models/__init__.py): importing the model files registers their
architectures. Pruned shapes (rebuilding a structurally pruned network) are in shapes.py.
"""

from . import mobilenetv3, npr_resnet  # noqa: F401  (register their architectures)
from .registry import create_model, get_entry, list_models, register_model

__all__ = ["create_model", "get_entry", "list_models", "register_model"]
