"""``hf_video``: a frozen Hugging Face video transformer (VideoMAE) over item videos.

Per item ``video_path``: ``num_frames`` frames sampled uniformly over the clip (the model's
``config.num_frames``, 16 for VideoMAE-base), each resized to ``resolution`` =
``config.image_size`` (224) without crop and normalised with ``mean`` / ``std`` (VideoMAE's
preprocessor uses ImageNet's). Per hidden-state entry (tubelet embeddings + every layer,
``output_hidden_states=True``) the mean over all patch tokens (VideoMAE has no CLS token;
every token of a sampled clip is real, so nothing is masked).

Example:
    >>> enc = build_encoder({"kind": "hf_video", "name": "videomae", "pretrained": False,
    ...                      "name_or_path": "MCG-NJU/videomae-base", "arch": "videomae"})
    >>> enc.encode(enc.preprocess([{"video_path": "/x/1.mp4"}])).shape
    torch.Size([1, 13, 768])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import NonNegativeInt, PositiveInt

from recsys.encoders.hf_model import load_hf_backbone, source_info
from recsys.encoders.images import IMAGENET_MEAN, IMAGENET_STD
from recsys.encoders.pooling import pool_tokens
from recsys.encoders.registry import register_encoder
from recsys.encoders.videos import VideoEncoder, VideoPreprocessor


def _from_config(name: str, option: str, given: int | None, fixed: int) -> int:
    """The model's fixed input size ``fixed``; a different explicit ``given`` is an error."""
    if given is not None and int(given) != fixed:
        raise ValueError(
            f"encoder {name!r}: {option}={given} but the model takes {option}={fixed} (its "
            f"position embeddings are fixed); set {option}=null or change the model config"
        )
    return fixed


@register_encoder("hf_video")
class HFVideoEncoder(VideoEncoder):
    """Frozen transformers video model; features [B, num_layers + 1 (or kept), hidden].

    Args:
        name, name_or_path, pretrained, arch, arch_overrides, layers, layer_groups, seed: as
            ``hf_text`` (``arch: videomae``: transformers' defaults are VideoMAE-base).
        pooling: ``mean`` (over the patch tokens of every entry).
        num_frames / resolution: None = the model config's ``num_frames`` / ``image_size``
            (a different value is an error: the position embeddings are fixed).
        mean / std: per-channel normalisation.  on_error: ``raise`` | ``skip``.
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
        pooling: Literal["mean"] = "mean",
        num_frames: PositiveInt | None = None,
        resolution: PositiveInt | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        on_error: Literal["raise", "skip"] = "raise",
        batch_size: PositiveInt = 8,
        seed: int = 0,
    ) -> None:
        super().__init__(name, layers, pooling, batch_size, layer_groups)
        if pooling != "mean":
            raise ValueError(f"{name}: hf_video supports pooling 'mean' (no CLS token), got {pooling!r}")
        key = "encoder.video"
        self.model = load_hf_backbone(name_or_path, pretrained, arch, arch_overrides, seed, key)
        config = self.model.config
        if not hasattr(config, "num_frames") or not hasattr(config, "image_size"):
            raise ValueError(
                f"{name}: {config.model_type!r} is not a video model with num_frames and image_size "
                "(hf_video supports VideoMAE-style models; use kind 'frames' for image encoders)"
            )
        self.videos = VideoPreprocessor(
            _from_config(name, "num_frames", num_frames, config.num_frames),
            _from_config(name, "resolution", resolution, config.image_size),
            mean,
            std,
            on_error,
        )
        self.source = source_info(name_or_path, pretrained, arch, arch_overrides)
        self.all_widths = [config.hidden_size] * (config.num_hidden_layers + 1)
        self._freeze()

    def hidden_states(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """``pixel_values`` [B, T, 3, R, R] -> num_layers + 1 tensors [B, hidden] (token mean)."""
        out = self.model(pixel_values=batch["pixel_values"], output_hidden_states=True, return_dict=True)
        return [pool_tokens(h, None, self.pooling) for h in out.hidden_states]
