"""Token pooling: one vector per item from a layer's token states.

Example:
    >>> h = torch.randn(2, 5, 8); mask = torch.tensor([[1, 1, 1, 0, 0], [1] * 5])
    >>> pool_tokens(h, mask, "mean").shape
    torch.Size([2, 8])
"""

from __future__ import annotations

import torch

TOKEN_POOLINGS = ("cls", "mean", "last")


def pool_tokens(hidden: torch.Tensor, mask: torch.Tensor | None, mode: str) -> torch.Tensor:
    """[B, T, D] token states (+ [B, T] 0/1 mask of real tokens, None = all real) -> [B, D].

    ``cls``: the first token, as returned. ``mean``: the mean over real tokens only
    (padding never enters the average, not even as NaN: padded states are replaced, not
    multiplied). ``last``: the last REAL token of each row (decoder-only LLMs), wherever the
    padding is (left or right). A row without real tokens pools to zeros.
    """
    if mode == "cls":
        return hidden[:, 0]
    if mask is None:
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    real = mask.bool()
    if mode == "mean":
        total = hidden.masked_fill(~real.unsqueeze(-1), 0.0).sum(dim=1)
        return total / real.sum(dim=1, keepdim=True).clamp_min(1).to(hidden.dtype)
    if mode == "last":
        positions = torch.arange(hidden.shape[1], device=hidden.device).expand_as(real)
        last = torch.where(real, positions, -1).amax(dim=1)
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last.clamp_min(0)]
        return torch.where((last >= 0).unsqueeze(-1), picked, 0.0)
    raise ValueError(f"unknown pooling {mode!r}; expected one of {TOKEN_POOLINGS}")
