"""Image inputs of frozen image encoders: load, convert to RGB, resize (no crop), normalise.

Items without an image (``image_path`` null) get an all-zero input and ``valid=False`` (the
encoder then writes a zero feature row); they are counted in ``batch["missing"]``. An
unreadable file raises an error naming it, or with ``on_error="skip"`` is treated like a
missing image and counted in ``batch["failed"]``.

Example:
    >>> prep = ImagePreprocessor(224, mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> prep([{"image_path": "/x/1.jpg"}, {"image_path": None}])["pixel_values"].shape
    torch.Size([2, 3, 224, 224])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import v2

from recsys.encoders.base import FrozenEncoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ON_ERROR = ("raise", "skip")


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
            "mode": "RGB",
            "resize": [self.resolution, self.resolution],
            "crop": None,
            "mean": self.mean,
            "std": self.std,
        }

    def _load(self, path: str) -> torch.Tensor | None:
        """[3, R, R] for a readable file; None when unreadable and on_error == skip."""
        try:
            with Image.open(path) as img:
                return self.transform(img.convert("RGB"))
        except (OSError, ValueError) as err:
            if self.on_error == "skip":
                return None
            raise OSError(
                f"cannot read image {path!r}: {err} (set on_error=skip to use a zero feature)"
            ) from err

    def __call__(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        pixels = torch.zeros(len(records), 3, self.resolution, self.resolution)
        valid = torch.zeros(len(records), dtype=torch.bool)
        missing = failed = 0
        for i, record in enumerate(records):
            path = record.get("image_path")
            if path is None:
                missing += 1
                continue
            image = self._load(path)
            if image is None:
                failed += 1
                continue
            pixels[i], valid[i] = image, True
        return {"pixel_values": pixels, "valid": valid, "missing": missing, "failed": failed}


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
