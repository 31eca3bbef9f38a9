"""How a cache stores its numbers: one codec per ``cache.dtype``.

    cache.dtype      <name>.npy holds                    gather returns      bytes/value  error*
    float32          float32                             float32             4            0
    float16          float16 (the default)               float16             2            2.1e-4
    bfloat16         uint16 (bfloat16 bit patterns)      bfloat16            2            1.7e-3
    int8             int8 + scales [1, L, D_max]         float32             1            7.7e-3
    int8_item_layer  int8 + scales [N+1, L, 1]           float32             1 + 4/D_max  1.8e-2
    float8_e4m3      uint8 (float8_e4m3fn bit patterns)  float32             1            2.7e-2

    * ||x_hat - x|| / ||x|| over all features, against float32 (see below); scales are
      float32, in <name>.scales.npy

numpy has no bfloat16 or float8, so those caches hold the raw bit patterns as uint16 / uint8
(``np.load`` gives integers, not numbers): ``torch.from_numpy(a).view(torch.bfloat16)``
(``float8_e4m3fn``) reads them, as ``recsys.cache.store`` does.

``int8`` is symmetric: ``q = round(x / s)`` in [-127, 127] and ``x ~ q * s``, with
``s = max|x| / 127`` (float32) over the values one scale covers, so every value is off by at
most ``s / 2``; an all-zero group (row 0, a missing item, the padding columns of a narrower
layer) has ``s = 0`` and stays exactly zero. ``<name>.scales.npy`` broadcasts against the
values [N+1, L, D_max]:

- ``int8`` (the default int8 scheme): one scale per (entry, column) over all items,
  [1, L, D_max];
- ``int8_item_layer``: one scale per (item, entry), [N+1, L, 1].

Relative error = ||x_hat - x|| / ||x|| of every item's features against the float32 ones,
measured on the Scientific MiniLM cache (20,314 items x 7 entries x 384, built in float32,
converted from its float16 rounding as ``recsys-cache`` does). On MovieLens-100K (against
its float16 cache) int8 gives 0.60% against int8_item_layer's 1.89% (MiniLM), and 0.684%
against 0.677% (EfficientNet-Lite0, 8 x 320). Per column wins because a few of MiniLM's
columns (e.g. 99, 157, 223) hold values up to 3.7 where the median column stays under 0.8,
and a scale per row spends its 255 levels on them. Files: int8 takes 50.01% of the float16
bytes on Scientific (values and 10 KB of scales), int8_item_layer 50.52%.

``float8_e4m3`` saturates at +-448 (clamped first) and rounds to nearest: relative error
<= 2^-4 for |x| >= 2^-6, absolute <= 2^-10 below; ``bfloat16`` rounds to nearest even:
relative error <= 2^-8.

``float16`` and ``float32`` are what an encoder writes (recsys/cache/build.py); the other
dtypes are conversions of the float16 cache (recsys/cache/convert.py).

Example:
    >>> codec = CODECS["int8"]
    >>> x = np.random.randn(5, 7, 384).astype(np.float32)
    >>> scales = codec.chunk_scales(x)                     # [1, 7, 384]
    >>> q = codec.encode(x, scales)                        # int8 [5, 7, 384]
    >>> dequantise(torch.from_numpy(q), torch.from_numpy(scales))   # float32 [5, 7, 384]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

CacheDtype = Literal["float16", "float32", "bfloat16", "int8", "int8_item_layer", "float8_e4m3"]
#: What the encoders write; the other dtypes are converted from ``SOURCE_DTYPE`` caches.
ENCODED = ("float16", "float32")
SOURCE_DTYPE = "float16"
INT8_MAX = 127
FLOAT8_MAX = 448.0  # the largest finite float8_e4m3fn


@dataclass(frozen=True)
class Codec:
    """One ``cache.dtype``: the numpy dtype of ``<name>.npy`` (``stored``), the torch dtype its
    bits are read as (``view``), and for int8 the group one scale covers (``scale``)."""

    name: str
    stored: str
    view: torch.dtype
    scale: Literal["channel", "item_layer"] | None = None

    @property
    def encoded(self) -> bool:
        """Written by the encoder itself (else converted from the float16 cache)."""
        return self.name in ENCODED

    def scales_shape(self, shape: tuple[int, ...] | list[int]) -> list[int] | None:
        """The shape of the scales of values ``shape`` [N+1, L, D_max]; None without scales."""
        n, layers, width = shape
        return {"channel": [1, layers, width], "item_layer": [n, layers, 1], None: None}[self.scale]

    def storage(self, shape: tuple[int, ...] | list[int]) -> dict[str, Any]:
        """The manifest's ``storage`` record: how to read values of ``shape`` back."""
        record: dict[str, Any] = {"values": self.stored, "view": str(self.view).removeprefix("torch.")}
        if self.scale is not None:
            record["scales"] = {"granularity": self.scale, "dtype": "float32",
                                "shape": self.scales_shape(shape), "decode": "values * scales"}
        return record

    def chunk_scales(self, x: np.ndarray) -> np.ndarray:
        """float32 scales of ``x`` [n, L, D]: max|x| / 127 over the items ([1, L, D],
        ``channel``: the scales of a whole cache are the maximum over its chunks) or over the
        columns ([n, L, 1], ``item_layer``)."""
        axis = {"channel": 0, "item_layer": 2}[self.scale]
        return (np.abs(x, dtype=np.float32).max(axis=axis, keepdims=True) / INT8_MAX).astype(np.float32)

    def encode(self, x: np.ndarray, scales: np.ndarray | None = None) -> np.ndarray:
        """The stored form ([n, L, D] of ``stored``) of features ``x`` [n, L, D] (float);
        ``scales`` (int8 only) broadcast against ``x``."""
        x = np.asarray(x, dtype=np.float32)
        if self.scale is not None:
            safe = np.where(scales > 0, scales, 1).astype(np.float32)
            return np.clip(np.rint(x / safe), -INT8_MAX, INT8_MAX).astype(np.int8)
        if self.view == torch.float8_e4m3fn:
            x = np.clip(x, -FLOAT8_MAX, FLOAT8_MAX)
        return torch.from_numpy(x).to(self.view).view(getattr(torch, self.stored)).numpy()


CODECS: dict[str, Codec] = {
    c.name: c
    for c in (
        Codec("float16", "float16", torch.float16),
        Codec("float32", "float32", torch.float32),
        Codec("bfloat16", "uint16", torch.bfloat16),
        Codec("int8", "int8", torch.int8, scale="channel"),
        Codec("int8_item_layer", "int8", torch.int8, scale="item_layer"),
        Codec("float8_e4m3", "uint8", torch.float8_e4m3fn),
    )
}


def codec(dtype: str) -> Codec:
    """The codec of ``cache.dtype`` ``dtype``; ValueError naming the known ones."""
    if dtype not in CODECS:
        raise ValueError(f"cache dtype {dtype!r} is not one of {list(CODECS)}")
    return CODECS[dtype]


def dequantise(values: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:
    """Features from stored ``values`` [..., L, D] (viewed as the codec's torch dtype):
    ``values * scales`` in float32 for int8 (``scales`` broadcast against them), float32 for
    float8, and the values themselves for the dtypes torch computes in (float16, bfloat16,
    float32)."""
    if values.dtype == torch.int8:
        return values.to(torch.float32) * scales
    if values.dtype == torch.float8_e4m3fn:
        return values.to(torch.float32)
    return values
