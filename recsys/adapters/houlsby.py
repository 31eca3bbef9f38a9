"""``houlsby``: bottleneck adapters inside the frozen backbone (Houlsby et al. 2019).

Transformers: two adapters in every layer, after the attention output projection and after
the feed-forward output projection (before dropout and the residual sum):
``x -> x + W_up·ReLU(W_down·x)`` (d -> r -> d, the IISAN ``SideBlock``: weights N(0, 0.01),
zero biases, so the layer starts near identity). Targets: modules named
``layer.<i>.attention.output.dense`` and ``layer.<i>.output.dense`` (BERT, MiniLM), or
``layers.<i>.attention.o_proj`` and ``layers.<i>.mlp.fc2`` (ViT in transformers >= 5).

Convnets (timm EfficientNet/MobileNet, ``blocks.<stage>.<block>``): a block has one output,
so one adapter after every block, the same ``SideBlock`` applied per pixel over the channels
(``[B, C, H, W]``: channels last, ``C -> r -> C``, back) — the residual-adapter form of
Rebuffi et al. 2017 with 1x1 convolutions.

Every backbone weight stays frozen; only the adapters (``adapter`` group, lr 1e-4), the heads
and the user encoder train. A model with neither kind of target raises a ValueError.
"""

from __future__ import annotations

import re

import torch
from pydantic import PositiveInt
from torch import nn

from recsys.adapters import register_adapter
from recsys.adapters.backbone import TunedBackboneTower
from recsys.adapters.side_block import SideBlock

TRANSFORMER_TARGETS = re.compile(
    r"(^|\.)layer\.\d+\.(attention\.)?output\.dense$|(^|\.)layers\.\d+\.(attention\.o_proj|mlp\.fc2)$"
)
CONVNET_TARGETS = re.compile(r"(^|\.)blocks\.\d+\.\d+$")


class Adapted(nn.Module):
    """A frozen module followed by a trainable adapter over its output features:
    ``[..., d]`` (``channels_dim=-1``) or ``[B, d, H, W]`` (``channels_dim=1``)."""

    def __init__(self, layer: nn.Module, width: int, bottleneck: int, channels_dim: int) -> None:
        super().__init__()
        self.layer = layer
        self.adapter = SideBlock(width, bottleneck)
        self.channels_dim = channels_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layer(x)
        return self.adapter(y.movedim(self.channels_dim, -1)).movedim(-1, self.channels_dim)


def _out_channels(block: nn.Module) -> int:
    """Output channels of a convnet block: those of its last Conv2d."""
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def insert_adapters(model: nn.Module, bottleneck: PositiveInt = 64) -> None:
    """Wrap every target of ``model`` in ``Adapted`` (in place)."""
    modules = dict(model.named_modules())
    linear = [n for n, m in modules.items() if TRANSFORMER_TARGETS.search(n) and isinstance(m, nn.Linear)]
    targets = {n: (modules[n].out_features, -1) for n in linear}
    if not targets:
        blocks = [n for n in modules if CONVNET_TARGETS.search(n)]
        targets = {n: (_out_channels(modules[n]), 1) for n in blocks}
    if not targets:
        raise ValueError(
            f"houlsby adapters go after the attention and FFN output projections of transformer "
            f"layers ('layer.<i>.attention.output.dense' and 'layer.<i>.output.dense', or "
            f"'layers.<i>.attention.o_proj' and 'layers.<i>.mlp.fc2') or after the "
            f"blocks of a timm convnet ('blocks.<s>.<b>'); {type(model).__name__} has neither "
            f"(use adapter=fft or adapter=bitfit for it)"
        )
    for name, (width, channels_dim) in targets.items():
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent)
        setattr(owner, child, Adapted(getattr(owner, child), width, bottleneck, channels_dim))


@register_adapter("houlsby")
class HoulsbyTower(TunedBackboneTower):
    """Bottleneck adapters inside the frozen backbones (``insert_adapters``)."""

    tune = staticmethod(insert_adapters)
