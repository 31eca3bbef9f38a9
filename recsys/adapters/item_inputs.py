"""Raw inputs of every item, prepared once, so an encoder can run inside the training step.

A tower that runs its encoders every step (``recsys/adapters/backbone.py``) must not
tokenise titles or decode image files per step. ``build_item_inputs(encoder, records)``
runs the encoder's OWN ``preprocess`` over the whole catalogue once, in chunks of
``encoder.batch_size``, and keeps the result as non-persistent buffers indexed by item id
(row 0 = the padding item, ``valid[0] = False``); ``inputs.batch(ids)`` is then one
``index_select`` per tensor on the device, no per-item Python.

- ``TokenInputs`` (text encoders): every tokenizer tensor (``input_ids``,
  ``attention_mask``, ...) as [N+1, T] long, T = the longest title (<= max_length). A batch
  is cut to its own longest title, as the cache builder's ``padding="longest"`` does.
- ``PixelInputs`` (image encoders): the resized pixels as uint8 [N+1, 3, R, R] (a quarter
  of float32). The encoder's float pixels are ``normalize(to_float(u8))``, so the uint8
  values are recovered exactly and the same two torchvision kernels run on the device.

Example:
    >>> inputs = build_item_inputs(encoder, items.to_dicts())    # items 1..N in order
    >>> encoder.encode(inputs.batch(torch.tensor([3, 1])))       # == the cached rows 3, 1
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:  # importing recsys.encoders loads transformers and timm (seconds)
    from recsys.encoders.base import FrozenEncoder

PAD_RECORD = {"title": "", "image_path": None}  # row 0: never valid, features zeroed


def _preprocessed(encoder: FrozenEncoder, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``encoder.preprocess`` over the padding record + ``records``, in encoder-sized chunks."""
    rows, size = [PAD_RECORD, *records], encoder.batch_size
    return [encoder.preprocess(rows[i : i + size]) for i in range(0, len(rows), size)]


class ItemInputs(nn.Module):
    """Base: ``batch(ids [n] long) -> dict`` for ``encoder.encode`` (tensors on the device of
    the buffers, ``valid`` [n] bool included); ``num_items`` = N."""

    valid: torch.Tensor

    @property
    def num_items(self) -> int:
        return self.valid.shape[0] - 1

    def batch(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class TokenInputs(ItemInputs):
    """Pre-tokenised titles: each tokenizer tensor [N+1, T] long, ``valid`` [N+1] bool."""

    def __init__(self, chunks: list[dict[str, Any]]) -> None:
        super().__init__()
        self.keys = [k for k, v in chunks[0].items() if torch.is_tensor(v) and v.dim() == 2]
        width = max(c["attention_mask"].shape[1] for c in chunks)
        for key in self.keys:
            padded = [nn.functional.pad(c[key], (0, width - c[key].shape[1])) for c in chunks]
            self.register_buffer(key, torch.cat(padded), persistent=False)
        valid = torch.cat([c["valid"] for c in chunks])
        valid[0] = False
        self.register_buffer("valid", valid, persistent=False)

    def batch(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """ids [n] -> tokenizer tensors [n, T_b] (T_b = longest of these titles) + valid [n]."""
        mask = self.attention_mask.index_select(0, ids)
        length = int(mask.sum(dim=1).max())  # one host sync per batch
        out = {k: getattr(self, k).index_select(0, ids)[:, :length] for k in self.keys}
        return out | {"valid": self.valid.index_select(0, ids)}


class PixelInputs(ItemInputs):
    """Resized images as uint8 [N+1, 3, R, R] + ``valid`` [N+1]; normalised per batch."""

    def __init__(self, chunks: list[dict[str, Any]], mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.mean, self.std = list(mean), list(std)
        pixels = torch.cat([c["pixel_values"] for c in chunks])
        scale = torch.tensor(self.std)[:, None, None], torch.tensor(self.mean)[:, None, None]
        uint8 = ((pixels * scale[0] + scale[1]) * 255).round().clamp(0, 255).to(torch.uint8)
        valid = torch.cat([c["valid"] for c in chunks])
        valid[0] = False
        self.register_buffer("pixels", uint8, persistent=False)
        self.register_buffer("valid", valid, persistent=False)

    def batch(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """ids [n] -> ``pixel_values`` [n, 3, R, R] float32 (the encoder's own transform)."""
        from torchvision.transforms.v2 import functional as TF  # noqa: N812  (slow import)

        pixels = TF.to_dtype(self.pixels.index_select(0, ids), torch.float32, scale=True)
        return {"pixel_values": TF.normalize(pixels, self.mean, self.std),
                "valid": self.valid.index_select(0, ids)}


def build_item_inputs(encoder: FrozenEncoder, records: list[dict[str, Any]]) -> ItemInputs:
    """Preprocess items 1..N (``records`` in item-id order) once with ``encoder``'s own
    preprocessing: ``TokenInputs`` for text encoders, ``PixelInputs`` for image encoders."""
    chunks = _preprocessed(encoder, records)
    if "pixel_values" in chunks[0]:
        return PixelInputs(chunks, encoder.images.mean, encoder.images.std)
    if "attention_mask" in chunks[0]:
        return TokenInputs(chunks)
    raise ValueError(f"encoder {encoder.name!r}: no pixel_values or attention_mask to store")
