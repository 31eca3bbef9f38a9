"""Frozen foundation encoders -> per-item per-layer features (see ``FrozenEncoder``).

Kinds are found by the registry (``recsys.encoders.registry``): ``hf_text``, ``hf_llm``
(text), ``hf_image``, ``timm_image`` (image), ``hf_audio`` (audio), ``hf_video``, ``frames``
(video), and any a third-party package adds through the entry-point group
``recsys.encoders``. Importing this package loads none of them (transformers and timm take
seconds to import); ``build_encoder`` and ``list_encoders`` do.
"""

from recsys.encoders.base import FrozenEncoder
from recsys.encoders.registry import build_encoder, list_encoders, register_encoder
from recsys.encoders.weights import resolve_weights

__all__ = ["FrozenEncoder", "build_encoder", "list_encoders", "register_encoder", "resolve_weights"]
