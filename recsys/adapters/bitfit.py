"""``bitfit``: only the backbone's bias terms train (Ben Zaken et al. 2022), plus the heads
and the user encoder. Applies to every encoder kind: for BERT/ViT the biases of every
Linear and LayerNorm; for timm EfficientNet (bias-free convolutions) the BatchNorm biases."""

from __future__ import annotations

from torch import nn

from recsys.adapters import register_adapter
from recsys.adapters.backbone import TunedBackboneTower


def unfreeze_biases(model: nn.Module) -> None:
    """Parameters named ``*bias`` trainable, every other one frozen."""
    for name, param in model.named_parameters():
        param.requires_grad_(name.rsplit(".", 1)[-1] == "bias")


@register_adapter("bitfit")
class BitFitTower(TunedBackboneTower):
    """Only the encoders' bias terms train (``unfreeze_biases``)."""

    tune = staticmethod(unfreeze_biases)
