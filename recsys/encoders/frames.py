"""``frames``: a video encoder made of ANY registered image encoder run on sampled frames.

``image_encoder`` is an image encoder config (``{kind: timm_image, ...}`` or ``hf_image``,
as under ``encoder/image``). Per item ``video_path``, ``num_frames`` frames are sampled
uniformly over the clip and preprocessed as that encoder preprocesses images (its
resolution, mean and std; resize without crop); the image encoder's ``hidden_states`` run
on every distinct frame and each entry is averaged over them (``frame_mask``: a clip
shorter than ``num_frames`` counts each frame once). Widths, entries and weights are the
image encoder's. Layer selection (``layers`` / ``layer_groups``) belongs to this encoder.

Example:
    >>> enc = build_encoder({"kind": "frames", "name": "frames_effnet", "num_frames": 4,
    ...     "image_encoder": {"kind": "timm_image", "name_or_path": "tf_efficientnet_lite0",
    ...                       "pretrained": False}})
    >>> enc.encode(enc.preprocess([{"video_path": "/x/1.mp4"}])).shape
    torch.Size([1, 8, 320])
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import NonNegativeInt, PositiveInt

from recsys.encoders.images import ImageEncoder
from recsys.encoders.registry import EncoderConfig, build_encoder, register_encoder
from recsys.encoders.videos import VideoEncoder, VideoPreprocessor


@register_encoder("frames")
class FramesEncoder(VideoEncoder):
    """Frame-averaged image encoder; features [B, L, D_max] with the image encoder's widths.

    Args:
        name: unique encoder name (cache file stem).
        image_encoder: the image encoder config (``kind`` + its options; ``name`` optional,
            ``layers`` / ``layer_groups`` must be unset: they are this encoder's).
        num_frames: frames sampled per clip.
        layers / layer_groups: hidden-state entries to keep (see FrozenEncoder).
        pooling: ``mean`` (over the distinct sampled frames).
        on_error: ``raise`` | ``skip`` for unreadable videos.
        batch_size: videos per batch (x num_frames images through the image encoder).
    """

    def __init__(
        self,
        name: str,
        image_encoder: EncoderConfig,
        num_frames: PositiveInt = 4,
        layers: list[NonNegativeInt] | None = None,
        layer_groups: PositiveInt | None = None,
        pooling: Literal["mean"] = "mean",
        on_error: Literal["raise", "skip"] = "raise",
        batch_size: PositiveInt = 8,
    ) -> None:
        super().__init__(name, layers, pooling, batch_size, layer_groups)
        if pooling != "mean":
            raise ValueError(f"{name}: frames supports pooling 'mean' (over frames), got {pooling!r}")
        selected = [k for k in ("layers", "layer_groups") if image_encoder.get(k) is not None]
        if selected:
            raise ValueError(
                f"{name}: set {selected} on the frames encoder, not on its image_encoder "
                "(which always returns every entry)"
            )
        image = build_encoder({"name": f"{name}_image", **image_encoder})
        if not isinstance(image, ImageEncoder):
            raise ValueError(f"{name}: image_encoder must be an image encoder, got kind {image.kind!r}")
        self.image = image
        self.model = image.model
        prep = image.images
        self.videos = VideoPreprocessor(num_frames, prep.resolution, prep.mean, prep.std, on_error)
        self.source = {"image_encoder": {"kind": image.kind, **image.source}}
        self.all_widths = list(image.all_widths)
        self._freeze()

    def preprocessing(self) -> dict[str, Any]:
        return self.videos.settings() | {
            "image_encoder": {"kind": self.image.kind, "pooling": self.image.pooling}
        }

    def hidden_states(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """``pixel_values`` [B, T, 3, R, R] -> per entry [B, D_l]: the image encoder's pooled
        entry of each distinct frame (``frame_mask`` [B, T]), averaged per clip (zeros for a
        clip without frames)."""
        mask = batch["frame_mask"]
        owner = mask.nonzero()[:, 0]  # [F] clip of each distinct frame
        count = mask.sum(dim=1, keepdim=True).clamp_min(1)  # [B, 1]
        if owner.numel() == 0:
            return [torch.zeros(mask.shape[0], w, device=mask.device) for w in self.all_widths]
        entries = self.image.hidden_states({"pixel_values": batch["pixel_values"][mask]})  # [F, D_l]
        return [
            torch.zeros(mask.shape[0], h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, owner, h)
            / count.to(h.dtype)
            for h in entries
        ]
