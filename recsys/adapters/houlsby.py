"""``houlsby``: two bottleneck adapters in every transformer layer (Houlsby et al. 2019).

After the attention output projection and after the feed-forward output projection (before
dropout, the residual sum and LayerNorm), ``x -> x + W_up·ReLU(W_down·x)`` (d -> r -> d, the
IISAN ``SideBlock``: weights N(0, 0.01), zero biases, so the layer starts near identity).
Every backbone weight stays frozen; only the adapters (``adapter`` group, lr 1e-4), the heads
and the user encoder train.

Targets: modules named ``layer.<i>.attention.output.dense`` and ``layer.<i>.output.dense``
(transformers BERT/MiniLM/ViT). A model without them (timm EfficientNet: convolutions, no
attention) raises a ValueError: use ``fft`` or ``bitfit`` there.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from recsys.adapters.backbone import register_tuned
from recsys.adapters.side_block import SideBlock

TARGETS = re.compile(r"(^|\.)layer\.\d+\.(attention\.)?output\.dense$")


class Adapted(nn.Module):
    """A frozen projection followed by a trainable adapter: ``[..., d_in] -> [..., d_out]``."""

    def __init__(self, layer: nn.Linear, bottleneck: int) -> None:
        super().__init__()
        self.layer = layer
        self.adapter = SideBlock(layer.out_features, bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.layer(x))


def insert_adapters(model: nn.Module, bottleneck: int = 64) -> None:
    """Wrap every target projection of ``model`` in ``Adapted`` (in place)."""
    names = [n for n, m in model.named_modules() if TARGETS.search(n) and isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(
            f"houlsby adapters go after the attention and FFN output projections of transformer "
            f"layers ('layer.<i>.attention.output.dense', 'layer.<i>.output.dense'); "
            f"{type(model).__name__} has none (use adapter=fft or adapter=bitfit for it)"
        )
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent)
        setattr(owner, child, Adapted(getattr(owner, child), bottleneck))


register_tuned("houlsby", insert_adapters)
