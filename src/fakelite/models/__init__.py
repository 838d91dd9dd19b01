"""Detectors in plain torch, behind a registry whose entries carry their preprocessing."""

from .registry import Preprocess, create_model, get_entry, list_models, register_model

__all__ = ["Preprocess", "create_model", "get_entry", "list_models", "register_model"]
