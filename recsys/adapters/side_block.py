"""Building blocks of IISAN side streams: the side block, the mixing gate, layer alignment.

- ``SideBlock``: a bottleneck residual MLP ``x + W_up·ReLU(W_down·x)`` (d -> r -> d), weights
  N(0, 0.01), zero biases, no LayerNorm, no dropout (IISAN).
- ``Mix``: how two width-d tensors are combined inside a stream. ``gated=True`` is the IISAN
  gate ``g·a + (1-g)·b`` with one scalar ``g = sigmoid(w / 0.1)`` per block, ``w = 0`` at init
  (``g = 0.5``); ``gated=False`` is the plain sum ``a + b`` (the "add" ablation), no parameters.
- ``LayerAlign``: per-layer ``Linear(w_l -> d)`` for layers whose width ``w_l`` differs from
  the stream width ``d`` (identity elsewhere, so equal widths add no parameters). It reads layer
  ``l`` of a zero-padded feature tensor ``[n, L, D_max]`` (only its first ``w_l`` columns).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

GATE_TEMPERATURE = 0.1
SIDE_INIT_STD = 0.01


class SideBlock(nn.Module):
    """Residual bottleneck adapter ``x + up(relu(down(x)))``; ``[..., d] -> [..., d]``."""

    def __init__(self, d: int, r: int) -> None:
        super().__init__()
        self.down = nn.Linear(d, r)
        self.up = nn.Linear(r, d)
        for lin in (self.down, self.up):
            nn.init.normal_(lin.weight, std=SIDE_INIT_STD)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(F.relu(self.down(x)))


class Mix(nn.Module):
    """Combine ``a`` and ``b`` (both ``[..., d]``): ``g·a + (1-g)·b`` if gated else ``a + b``."""

    def __init__(self, gated: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1)) if gated else None

    def gate(self) -> torch.Tensor | None:
        """The gate value ``g = sigmoid(w / 0.1)``, shape [1]; None when not gated."""
        return None if self.weight is None else torch.sigmoid(self.weight / GATE_TEMPERATURE)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        g = self.gate()
        if g is None:
            return a + b
        g = g.to(a.dtype)
        return g * a + (1 - g) * b


class LayerAlign(nn.Module):
    """Map layer ``l`` of a feature tensor to width ``d``: ``[n, L, D_max] -> [n, d]``.

    Args:
        widths: real width of each of the L layers.
        d: target width; layers with ``widths[l] == d`` pass through unchanged.
    """

    def __init__(self, widths: list[int], d: int) -> None:
        super().__init__()
        self.widths = list(widths)
        self.maps = nn.ModuleList(nn.Identity() if w == d else nn.Linear(w, d) for w in widths)

    def forward(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        return self.maps[layer](h[:, layer, : self.widths[layer]])
