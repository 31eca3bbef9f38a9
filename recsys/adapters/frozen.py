"""``frozen``: linear probe — frozen last-layer features + trainable heads (the reference's
"standard" setup with the backbone frozen). The backbone never changes, so it runs from the
hidden-state CACHE like IISAN; without a layer schedule (``BackboneTower.layer_schedule``)
the store holds each encoder's last cached entry only. Per modality ``Linear(d, 64)``, fused
by ``Linear(64·M, 64)`` (``BackboneTower``). The same tower over
``EncoderFeatures(tuned=False)`` gives the same embeddings with the encoders in the loop
(tests/test_adapters_backbone.py)."""

from __future__ import annotations

from recsys.adapters import register_adapter
from recsys.adapters.backbone import BackboneTower

register_adapter("frozen")(BackboneTower)
