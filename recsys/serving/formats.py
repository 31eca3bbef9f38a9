"""How an export stores its item table ``[N+1, d]``: float32, float16, int8 or binary.

``encode(table, fmt)`` gives the tensors written to ``item_embeddings.safetensors``;
``decode(tensors, fmt)`` reads them back as the float32 table ``[N+1, d]`` that serving
scores with (int8 and float16 are dequantised once, at load):

=========  ===================================================  ===============  ==============
format     tensors                                              bytes per item   table read back
=========  ===================================================  ===============  ==============
float32    ``item_embeddings`` float32 ``[N+1, d]``             ``4d``           exact
float16    ``item_embeddings`` float16 ``[N+1, d]``             ``2d``           rel. error <= 2^-11
int8       ``item_embeddings`` int8 ``[N+1, d]`` +              ``d + 4``        abs. error <= row max / 254
           ``item_scales`` float32 ``[N+1]``
binary     the int8 tensors + ``item_codes`` int64 ``[N+1, W]``  ``d + 4 + 8W``   as int8
=========  ===================================================  ===============  ==============

int8 is symmetric with one scale per item row: ``scale = max|row| / 127``, ``code =
round(row / scale)`` in -127..127, ``row ~ code * scale``. Binary holds each item's sign
bits, packed 64 to an int64 word (``W = ceil(d / 64)`` words; bit ``j`` of word ``w`` is
dimension ``64w + j`` being > 0; pad bits 0), for candidate generation by Hamming distance,
plus the int8 table, which the exact re-rank of those candidates scores with (and the user
encoder reads its history items from): ``recsys.serving.retrieval``. The sign codes of
``u`` and ``v`` differ in ``hamming`` bits, and ``sign(u) . sign(v) = d - 2 * hamming``, so
the fewest differing bits is the best sign-vector dot product.
"""

from __future__ import annotations

import torch
from torch import Tensor

FORMATS: tuple[str, ...] = ("float32", "float16", "int8", "binary")
WORD = 64  # sign bits per int64 code word

# SWAR popcount masks (int64; every mask's top bit is 0, so arithmetic shifts are safe).
_M1, _M2, _M4 = 0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F


def quantize_int8(table: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-row int8: (codes int8 ``[R, d]`` in -127..127, scales float32 ``[R]``)
    with ``table ~ codes * scales[:, None]``; an all-zero row gets scale 0."""
    table = table.float()
    scales = table.abs().amax(dim=1) / 127
    codes = torch.round(table / scales.clamp_min(torch.finfo(torch.float32).tiny)[:, None])
    return codes.clamp_(-127, 127).to(torch.int8), scales


def dequantize_int8(codes: Tensor, scales: Tensor) -> Tensor:
    """float32 ``[R, d]`` from int8 ``codes [R, d]`` and ``scales [R]``."""
    return codes.float() * scales[:, None]


def pack_signs(table: Tensor) -> Tensor:
    """Sign bits of ``table [R, d]`` (1 where > 0), packed: int64 ``[R, ceil(d / 64)]``."""
    rows, dim = table.shape
    words = -(-dim // WORD)
    bits = torch.zeros(rows, words * WORD, dtype=torch.long, device=table.device)
    bits[:, :dim] = table > 0
    shifts = torch.arange(WORD, device=table.device)
    return (bits.view(rows, words, WORD) << shifts).sum(dim=2)  # disjoint bits: sum == or


def unpack_signs(codes: Tensor, dim: int) -> Tensor:
    """Bool ``[R, dim]`` sign bits of ``codes [R, W]`` (the inverse of ``pack_signs``)."""
    shifts = torch.arange(WORD, device=codes.device)
    return ((codes.unsqueeze(2) >> shifts) & 1).view(codes.shape[0], -1)[:, :dim].bool()


def popcount(words: Tensor) -> Tensor:
    """Set bits of each int64 of ``words`` (any shape), same shape, int64."""
    x = words - ((words >> 1) & _M1)
    x = (x & _M2) + ((x >> 2) & _M2)
    x = (x + (x >> 4)) & _M4  # each byte holds its own count now
    return x.contiguous().view(torch.uint8).view(*words.shape, 8).sum(dim=-1)


def hamming(query_codes: Tensor, item_codes: Tensor) -> Tensor:
    """Hamming distances int64 ``[B, C]`` between sign codes ``[B, W]`` and ``[C, W]``."""
    return popcount(query_codes.unsqueeze(1) ^ item_codes.unsqueeze(0)).sum(dim=2)


def encode(table: Tensor, fmt: str) -> dict[str, Tensor]:
    """The tensors that store ``table [N+1, d]`` in format ``fmt`` (see the module docstring)."""
    if fmt not in FORMATS:
        raise ValueError(f"embedding format {fmt!r} is not one of {FORMATS}")
    table = table.detach().float().cpu().contiguous()
    if fmt in ("float32", "float16"):
        return {"item_embeddings": table.to(getattr(torch, fmt))}
    codes, scales = quantize_int8(table)
    tensors = {"item_embeddings": codes, "item_scales": scales}
    if fmt == "binary":
        tensors["item_codes"] = pack_signs(table)
    return tensors


def decode(tensors: dict[str, Tensor], fmt: str) -> Tensor:
    """The float32 table ``[N+1, d]`` that ``tensors`` (from ``encode(., fmt)``) store."""
    if fmt in ("int8", "binary"):
        return dequantize_int8(tensors["item_embeddings"], tensors["item_scales"])
    return tensors["item_embeddings"].float()


def nbytes(tensors: dict[str, Tensor]) -> int:
    """Bytes of the tensors' data (what the table costs on disk and to keep encoded)."""
    return sum(t.numel() * t.element_size() for t in tensors.values())
