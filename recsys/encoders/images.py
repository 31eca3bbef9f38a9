"""Image inputs of frozen image encoders: load, convert to RGB, resize (no crop), normalise.

Any Pillow mode is converted to 8-bit RGB by ``media.to_rgb``: transparency (RGBA, LA, PA,
palette or colour transparency) composited over white, 16-bit grayscale (I;16) scaled from
0..65535, 32-bit integer (I) and float (F) from their value range, never clipped to white.
Items without an image (``image_path`` null) get an all-zero input and ``valid=False`` (the
encoder then writes a zero feature row); they are counted in ``batch["missing"]``. An
unreadable file (corrupt, a mode Pillow cannot convert, over Pillow's decompression-bomb
limit) raises an error naming it, or with ``on_error="skip"`` is treated like a missing
image and counted in ``batch["failed"]`` (``media.read_records``, shared with the audio and
video encoders).

Example:
    >>> prep = ImagePreprocessor(224, mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> prep([{"image_path": "/x/1.jpg"}, {"image_path": None}])["pixel_values"].shape
    torch.Size([2, 3, 224, 224])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms import v2

from recsys.encoders.base import FrozenEncoder
from recsys.encoders.media import ON_ERROR, RGB_CONVERSION, load_rgb_image, read_records

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImagePreprocessor:
    """Records with ``image_path`` -> ``pixel_values`` [B, 3, R, R] float32, ``valid`` [B]
    bool, ``missing`` and ``failed`` int counts."""

    def __init__(
        self,
        resolution: int,
        mean: Sequence[float],
        std: Sequence[float],
        on_error: str = "raise",
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error {on_error!r} not in {ON_ERROR}")
        self.resolution = int(resolution)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.on_error = on_error
        self.transform = v2.Compose(
            [
                v2.Resize((self.resolution, self.resolution), antialias=True),
                v2.PILToTensor(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(self.mean, self.std),
            ]
        )

    def settings(self) -> dict[str, Any]:
        """What changes the pixels (for the manifest)."""
        return {
            "field": "image_path",
            **RGB_CONVERSION,
            "resize": [self.resolution, self.resolution],
            "crop": None,
            "mean": self.mean,
            "std": self.std,
        }

    def _load(self, path: str) -> torch.Tensor:
        """An image file -> [3, R, R] normalised float32."""
        return self.transform(load_rgb_image(path))

    def __call__(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        media = read_records(records, "image_path", self._load, self.on_error, "image")
        pixels = torch.zeros(len(records), 3, self.resolution, self.resolution)
        for i, image in enumerate(media.items):
            if image is not None:
                pixels[i] = image
        counts = {"missing": media.missing, "failed": media.failed}
        return {"pixel_values": pixels, "valid": media.valid} | counts


class ImageEncoder(FrozenEncoder):
    """A frozen encoder of item images: records' ``image_path`` -> ``pixel_values``.

    Subclasses set ``self.images`` (an ``ImagePreprocessor``) besides what FrozenEncoder needs.
    """

    modality = "image"
    images: ImagePreprocessor

    def preprocessing(self) -> dict[str, Any]:
        return self.images.settings()

    def preprocess(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Records with ``image_path`` -> ``pixel_values`` [B, 3, R, R] + ``valid`` [B]."""
        return self.images(records)
