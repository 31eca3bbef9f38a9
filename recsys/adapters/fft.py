"""``fft``: full fine-tuning — every backbone parameter trains with the heads and the user
encoder (the reference's FFT baseline). Applies to every encoder kind (transformers, timm).
Encoder weights are in the ``adapter`` optimiser group (lr 1e-4)."""

from __future__ import annotations

from torch import nn

from recsys.adapters import register_adapter
from recsys.adapters.backbone import TunedBackboneTower


def unfreeze_all(model: nn.Module) -> None:
    """Every parameter of the backbone trainable."""
    model.requires_grad_(True)


@register_adapter("fft")
class FullFineTuningTower(TunedBackboneTower):
    """Every encoder weight trains (``unfreeze_all``)."""

    tune = staticmethod(unfreeze_all)
