"""``fft``: full fine-tuning — every backbone parameter trains with the heads and the user
encoder (the reference's FFT baseline). Applies to every encoder kind (transformers, timm).
Encoder weights are in the ``adapter`` optimiser group (lr 1e-4)."""

from __future__ import annotations

from torch import nn

from recsys.adapters.backbone import register_tuned


def unfreeze_all(model: nn.Module) -> None:
    """Every parameter of the backbone trainable."""
    model.requires_grad_(True)


register_tuned("fft", unfreeze_all)
