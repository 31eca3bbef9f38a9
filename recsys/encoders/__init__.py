"""Frozen foundation encoders -> per-item per-layer features (see ``FrozenEncoder``).

Importing this package registers every built-in kind: ``hf_text``, ``hf_image``,
``timm_image``.
"""

from recsys.encoders import hf_image, hf_text, timm_image  # noqa: F401  (registration)
from recsys.encoders.base import FrozenEncoder
from recsys.encoders.registry import build_encoder, list_encoders, register_encoder
from recsys.encoders.weights import resolve_weights

__all__ = ["FrozenEncoder", "build_encoder", "list_encoders", "register_encoder", "resolve_weights"]
