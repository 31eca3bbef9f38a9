"""``iisan_uncached``: the IISAN side network with its frozen backbones run every step.

Same math as ``iisan`` (``IISANTower``), but its feature source is ``EncoderFeatures``
(frozen encoders in eval mode, no grad) instead of the cache: the per-layer features are
computed for the requested ids with the cache builder's own ``encode``, so cached and
uncached towers give the same item embeddings (up to the cache's fp16 rounding) — the
reference's uncached variant left dropout on; here the backbones never leave eval mode.
Layer schedule and options as ``iisan``.
"""

from __future__ import annotations

from typing import Any

from recsys.adapters import TowerContext, register_adapter
from recsys.adapters.iisan import IISANTower


@register_adapter("iisan_uncached")
class UncachedIISANTower(IISANTower):
    """``IISANTower`` over live frozen encoders (``LiveEncoders.features(tuned=False)``)."""

    reads = "encoders"

    @classmethod
    def from_context(cls, context: TowerContext, **options: Any) -> UncachedIISANTower:
        return cls(context.source.features(tuned=False), d_model=context.d_model, **options)
