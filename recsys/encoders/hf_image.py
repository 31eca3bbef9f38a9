"""``hf_image``: a frozen Hugging Face vision transformer (ViT) over item images.

Preprocessing as the IISAN reference: RGB, Resize(R, R) without crop, Normalize(mean 0.5,
std 0.5). Per hidden-state entry (patch embeddings + every layer) the first token (CLS).

Example:
    >>> enc = HFImageEncoder("vit_b16", "google/vit-base-patch16-224", pretrained=False,
    ...                      arch="vit")
    >>> enc.encode(enc.preprocess([{"image_path": "/x/1.jpg"}])).shape
    torch.Size([1, 13, 768])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import NonNegativeInt, PositiveInt

from recsys.encoders.hf_model import load_hf_backbone, source_info
from recsys.encoders.images import ImageEncoder, ImagePreprocessor
from recsys.encoders.pooling import pool_tokens
from recsys.encoders.registry import register_encoder


@register_encoder("hf_image")
class HFImageEncoder(ImageEncoder):
    """Frozen transformers vision model; features [B, num_layers + 1 (or len(layers)), hidden].

    Args:
        name, name_or_path, pretrained, arch, arch_overrides, layers, layer_groups, seed: as
            ``hf_text``.
        pooling: ``cls`` (the first token of every entry).
        resolution / mean / std: image transform (square resize, per-channel normalise).
        on_error: ``raise`` | ``skip`` for unreadable image files.
    """

    def __init__(
        self,
        name: str,
        name_or_path: str,
        pretrained: bool = True,
        arch: str | None = None,
        arch_overrides: dict[str, Any] | None = None,
        layers: list[NonNegativeInt] | None = None,
        layer_groups: PositiveInt | None = None,
        pooling: Literal["cls"] = "cls",
        resolution: PositiveInt = 224,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        on_error: Literal["raise", "skip"] = "raise",
        batch_size: PositiveInt = 64,
        seed: int = 0,
    ) -> None:
        super().__init__(name, layers, pooling, batch_size, layer_groups)
        if pooling != "cls":
            raise ValueError(f"{name}: hf_image supports pooling 'cls', got {pooling!r}")
        key = "encoder.image"
        self.model = load_hf_backbone(name_or_path, pretrained, arch, arch_overrides, seed, key)
        self.images = ImagePreprocessor(resolution, mean, std, on_error)
        self.source = source_info(name_or_path, pretrained, arch, arch_overrides)
        config = self.model.config
        self.all_widths = [config.hidden_size] * (config.num_hidden_layers + 1)
        self._freeze()

    def hidden_states(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Pixels -> num_layers + 1 tensors [B, hidden] (CLS of every entry)."""
        out = self.model(pixel_values=batch["pixel_values"], output_hidden_states=True, return_dict=True)
        return [pool_tokens(h, None, self.pooling) for h in out.hidden_states]
