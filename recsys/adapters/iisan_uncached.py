"""``iisan_uncached``: the IISAN side network with its frozen backbones run every step.

Same math as ``iisan`` (``IISANTower``), but its feature source is ``EncoderFeatures``
(frozen encoders in eval mode, no grad) instead of the cache: the per-layer features are
computed for the requested ids with the cache builder's own ``encode``, so cached and
uncached towers give the same item embeddings (up to the cache's fp16 rounding) — the
reference's uncached variant left dropout on; here the backbones never leave eval mode.
Layer schedule as ``iisan``: ``layers`` (list or per-modality dict) or ``layer_groups``.
"""

from __future__ import annotations

from recsys.adapters import layers_per_modality, register_adapter
from recsys.adapters.backbone import EncoderFeatures, build_encoders
from recsys.adapters.iisan import IISANTower
from recsys.adapters.layer_schedule import group_layer_schedule


@register_adapter("iisan_uncached")
def iisan_uncached(
    store: None,
    encoders: dict[str, dict],
    items: list[dict],
    layers: list[int] | dict[str, list[int]] | None = None,
    layer_groups: int | None = 6,
    **iisan,
) -> IISANTower:
    """IISANTower over live frozen encoders (``encoders``: modality -> encoder config;
    ``items``: records 1..N); ``iisan`` = the remaining ``IISANTower`` options."""
    if store is not None:
        raise ValueError("iisan_uncached runs its encoders itself; it takes no feature store")
    built = build_encoders(encoders)
    explicit = layers_per_modality(layers, list(built)) or {}
    schedule = {
        m: explicit.get(m) or group_layer_schedule(len(e.all_widths), layer_groups)
        for m, e in built.items()
    }
    return IISANTower(EncoderFeatures(built, items, schedule, tuned=False), **iisan)
