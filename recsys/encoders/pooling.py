"""Token pooling: one vector per item from a layer's token states.

Example:
    >>> h = torch.randn(2, 5, 8); mask = torch.tensor([[1, 1, 1, 0, 0], [1] * 5])
    >>> pool_tokens(h, mask, "mean").shape
    torch.Size([2, 8])
"""

from __future__ import annotations

import torch

TOKEN_POOLINGS = ("cls", "mean")


def pool_tokens(hidden: torch.Tensor, mask: torch.Tensor | None, mode: str) -> torch.Tensor:
    """[B, T, D] token states (+ [B, T] 0/1 mask of real tokens, None = all real) -> [B, D].

    ``cls``: the first token, as returned. ``mean``: the mean over real tokens only
    (padding never enters the average).
    """
    if mode == "cls":
        return hidden[:, 0]
    if mode == "mean":
        if mask is None:
            return hidden.mean(dim=1)
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
    raise ValueError(f"unknown pooling {mode!r}; expected one of {TOKEN_POOLINGS}")
