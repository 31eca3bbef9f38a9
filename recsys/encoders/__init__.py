"""Frozen foundation encoders -> per-item per-layer features (see ``FrozenEncoder``).

Importing this package registers every built-in kind: ``hf_text``, ``hf_llm`` (text),
``hf_image``, ``timm_image`` (image), ``hf_audio`` (audio), ``hf_video``, ``frames`` (video).
"""

from recsys.encoders import (  # noqa: F401  (registration)
    frames,
    hf_audio,
    hf_image,
    hf_llm,
    hf_text,
    hf_video,
    timm_image,
)
from recsys.encoders.base import FrozenEncoder
from recsys.encoders.registry import build_encoder, list_encoders, register_encoder
from recsys.encoders.weights import resolve_weights

__all__ = ["FrozenEncoder", "build_encoder", "list_encoders", "register_encoder", "resolve_weights"]
