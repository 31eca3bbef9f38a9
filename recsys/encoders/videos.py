"""Video inputs of frozen video encoders: sample frames, resize (no crop), normalise.

Per item ``video_path`` (a video file, a directory of frame images or a ``.npy`` uint8
[T, H, W, 3]; see ``media.load_video_frames``): ``num_frames`` frames at the centres of
``num_frames`` equal segments of the clip, each resized to R x R and normalised with
``mean`` / ``std``. A clip shorter than ``num_frames`` repeats frames; ``frame_mask`` marks
the first occurrence of each distinct frame, so an average over frames counts every frame
once. Missing / unreadable videos: as for images (zero input, ``valid=False``, counted).

Example:
    >>> prep = VideoPreprocessor(16, 224, IMAGENET_MEAN, IMAGENET_STD)
    >>> prep([{"video_path": "/x/1.mp4"}, {"video_path": None}])["pixel_values"].shape
    torch.Size([2, 16, 3, 224, 224])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms.v2 import functional as TF  # noqa: N812

from recsys.encoders.base import FrozenEncoder
from recsys.encoders.media import ON_ERROR, load_video_frames, read_records


class VideoPreprocessor:
    """Records with ``video_path`` -> ``pixel_values`` [B, T, 3, R, R] float32, ``frame_mask``
    [B, T] bool (distinct frames of valid clips), ``valid`` [B] bool, ``missing`` and
    ``failed`` int counts."""

    def __init__(
        self,
        num_frames: int,
        resolution: int,
        mean: Sequence[float],
        std: Sequence[float],
        on_error: str = "raise",
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error {on_error!r} not in {ON_ERROR}")
        self.num_frames = int(num_frames)
        self.resolution = int(resolution)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.on_error = on_error

    def settings(self) -> dict[str, Any]:
        """What changes the pixels (for the manifest)."""
        return {
            "field": "video_path",
            "num_frames": self.num_frames,
            "sampling": "uniform segment centres",
            "resize": [self.resolution, self.resolution],
            "crop": None,
            "mean": self.mean,
            "std": self.std,
        }

    def _load(self, path: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(frames uint8 [T, 3, R, R], frame mask [T] bool) of one clip."""
        frames, indices = load_video_frames(path, self.num_frames, self.resolution)
        first = torch.tensor([i not in indices[:k] for k, i in enumerate(indices)])
        return frames, first

    def __call__(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        media = read_records(records, "video_path", self._load, self.on_error, "video")
        size = (len(records), self.num_frames, 3, self.resolution, self.resolution)
        frames = torch.zeros(size, dtype=torch.uint8)
        frame_mask = torch.zeros(size[:2], dtype=torch.bool)
        for i, clip in enumerate(media.items):
            if clip is not None:
                frames[i], frame_mask[i] = clip
        pixels = TF.normalize(TF.to_dtype(frames, torch.float32, scale=True), self.mean, self.std)
        pixels[~media.valid] = 0.0
        return {
            "pixel_values": pixels,
            "frame_mask": frame_mask,
            "valid": media.valid,
            "missing": media.missing,
            "failed": media.failed,
        }


class VideoEncoder(FrozenEncoder):
    """A frozen encoder of item videos: records' ``video_path`` -> ``pixel_values``.

    Subclasses set ``self.videos`` (a ``VideoPreprocessor``) besides what FrozenEncoder needs.
    """

    modality = "video"
    videos: VideoPreprocessor

    def preprocessing(self) -> dict[str, Any]:
        return self.videos.settings()

    def preprocess(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Records with ``video_path`` -> ``pixel_values`` [B, T, 3, R, R], ``frame_mask``
        [B, T] + ``valid`` [B]."""
        return self.videos(records)
