"""Raw inputs of every item, prepared once, so an encoder can run inside the training step.

A tower that runs its encoders every step (``recsys/adapters/backbone.py``) must not
tokenise titles or decode media files per step. ``build_item_inputs(encoder, records)``
runs the encoder's OWN ``preprocess`` over the whole catalogue once, in chunks of
``encoder.batch_size``, and keeps the result as non-persistent buffers indexed by item id
(row 0 = the padding item, ``valid[0] = False``); ``inputs.batch(ids)`` is then one
``index_select`` per tensor on the device, no per-item Python.

- ``TensorInputs`` (text and audio encoders): every tensor of the batch as [N+1, T, ...],
  chunks zero-padded on the right along dim 1 to the longest: tokenizer tensors
  (``input_ids``, ``attention_mask``, ...) [N+1, T] long; wav2vec2-style waveforms
  ``input_values`` [N+1, S] float32 + ``attention_mask``; AST filterbanks ``input_values``
  [N+1, frames, mel bins] float32 (fixed size: 512 KiB per item for the AudioSet AST). With
  an ``attention_mask``, a batch is cut to the columns its items use (the longest title /
  clip; left-padded LLM titles included), as the cache builder's ``padding="longest"`` does;
  masked positions never change a pooled feature.
- ``PixelInputs`` (image and video encoders): the resized pixels as uint8 [N+1, 3, R, R], or
  video frames [N+1, T, 3, R, R] with their ``frame_mask`` [N+1, T] (a quarter of float32).
  The encoder's float pixels are ``normalize(to_float(u8))``, so the uint8 values are
  recovered exactly and the same two torchvision kernels run on the device.

Example:
    >>> inputs = build_item_inputs(encoder, items.to_dicts())    # items 1..N in order
    >>> encoder.encode(inputs.batch(torch.tensor([3, 1])))       # == the cached rows 3, 1
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:  # importing recsys.encoders loads transformers and timm (seconds)
    from recsys.encoders.base import FrozenEncoder

PAD_RECORD = {"title": "", "image_path": None, "audio_path": None, "video_path": None}  # row 0: never valid


def _preprocessed(encoder: FrozenEncoder, records: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``encoder.preprocess`` over the padding record + ``records``, in encoder-sized chunks,
    one at a time (a catalogue's float pixels need not fit in memory at once)."""
    rows, size = [PAD_RECORD, *records], encoder.batch_size
    return (encoder.preprocess(rows[i : i + size]) for i in range(0, len(rows), size))


class ItemInputs(nn.Module):
    """Base: ``batch(ids [n] long) -> dict`` for ``encoder.encode`` (tensors on the device of
    the buffers, ``valid`` [n] bool included); ``num_items`` = N."""

    valid: torch.Tensor

    @property
    def num_items(self) -> int:
        return self.valid.shape[0] - 1

    def batch(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class TensorInputs(ItemInputs):
    """Preprocessed text / audio: each batch tensor [N+1, T, ...], ``valid`` [N+1] bool."""

    def __init__(self, chunks: list[dict[str, Any]]) -> None:
        super().__init__()
        self.keys = [k for k, v in chunks[0].items() if torch.is_tensor(v) and v.dim() >= 2]
        for key in self.keys:
            width = max(c[key].shape[1] for c in chunks)
            padded = [
                nn.functional.pad(c[key], [0, 0] * (c[key].dim() - 2) + [0, width - c[key].shape[1]])
                for c in chunks
            ]
            self.register_buffer(key, torch.cat(padded), persistent=False)
        valid = torch.cat([c["valid"] for c in chunks])
        valid[0] = False
        self.register_buffer("valid", valid, persistent=False)

    def batch(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """ids [n] -> each tensor [n, T_b, ...] (T_b = the span of columns these items' attention
        masks use; all of T without a mask) + valid [n]."""
        out = {k: getattr(self, k).index_select(0, ids) for k in self.keys}
        if "attention_mask" in out:
            used = out["attention_mask"].bool().any(dim=0).int()  # [T]
            start, stop = torch.stack([used.argmax(), used.numel() - used.flip(0).argmax()]).tolist()
            out = {k: v[:, start:stop] for k, v in out.items()}  # one host sync per batch
        return out | {"valid": self.valid.index_select(0, ids)}


class PixelInputs(ItemInputs):
    """Resized images uint8 [N+1, 3, R, R] or video frames uint8 [N+1, T, 3, R, R] (+ their
    other tensors, e.g. ``frame_mask`` [N+1, T]) and ``valid`` [N+1]; normalised per batch."""

    def __init__(self, chunks: Iterable[dict[str, Any]], mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.mean, self.std = list(mean), list(std)
        std_, mean_ = torch.tensor(self.std)[:, None, None], torch.tensor(self.mean)[:, None, None]
        skip = ("pixel_values", "valid")
        stored: list[dict[str, torch.Tensor]] = []
        for chunk in chunks:  # each chunk's float pixels to uint8 before the next is made
            uint8 = ((chunk["pixel_values"] * std_ + mean_) * 255).round().clamp(0, 255).to(torch.uint8)
            stored.append({k: v for k, v in chunk.items() if torch.is_tensor(v) and k not in skip}
                          | {"pixels": uint8, "valid": chunk["valid"]})
        self.keys = [k for k in stored[0] if k not in ("pixels", "valid")]
        self.register_buffer("pixels", torch.cat([c.pop("pixels") for c in stored]), persistent=False)
        for key in self.keys:
            self.register_buffer(key, torch.cat([c[key] for c in stored]), persistent=False)
        valid = torch.cat([c["valid"] for c in stored])
        valid[0] = False
        self.register_buffer("valid", valid, persistent=False)

    def batch(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """ids [n] -> ``pixel_values`` [n, (T,) 3, R, R] float32 (the encoder's own transform)
        + the other tensors and ``valid`` [n]."""
        from torchvision.transforms.v2 import functional as TF  # noqa: N812  (slow import)

        pixels = TF.to_dtype(self.pixels.index_select(0, ids), torch.float32, scale=True)
        out = {k: getattr(self, k).index_select(0, ids) for k in self.keys}
        return out | {
            "pixel_values": TF.normalize(pixels, self.mean, self.std),
            "valid": self.valid.index_select(0, ids),
        }


def build_item_inputs(encoder: FrozenEncoder, records: list[dict[str, Any]]) -> ItemInputs:
    """Preprocess items 1..N (``records`` in item-id order) once with ``encoder``'s own
    preprocessing: ``PixelInputs`` for image and video encoders, ``TensorInputs`` for text
    and audio encoders."""
    chunks = _preprocessed(encoder, records)
    first = next(chunks)
    if "pixel_values" in first:
        pixels = encoder.videos if encoder.modality == "video" else encoder.images
        return PixelInputs(itertools.chain([first], chunks), pixels.mean, pixels.std)
    if "attention_mask" in first or "input_values" in first:
        return TensorInputs([first, *chunks])
    raise ValueError(
        f"encoder {encoder.name!r}: no pixel_values, attention_mask or input_values to store "
        "(build_item_inputs supports text, image, audio and video encoders)"
    )
