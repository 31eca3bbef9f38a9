"""``lora``: low-rank updates of PRETRAINED projections (Hu et al. 2022) through peft
(``inject_adapter_in_model``; extra ``lora``). Each target ``W x`` becomes
``W x + (alpha/r)·B A x`` with ``W`` the pretrained (frozen) weight, ``A`` Kaiming-uniform,
``B = 0``: at initialisation the model computes exactly what the frozen one does (the
reference replaced the pretrained Q/V weights with random ones; that flaw is not kept).
Only ``A``, ``B`` (``adapter`` group, lr 1e-4), the heads and the user encoder train.

Targets (``targets``: module-name suffixes, or null = the first family the model has):

- transformers attention: ``query`` / ``value`` (Linear; BERT, MiniLM) or ``q_proj`` / ``v_proj``
  (ViT in transformers >= 5, LLaMA/Qwen), the paper's Q/V;
- timm convnets with inverted-residual blocks (EfficientNet, MobileNet): their 1x1
  pointwise convolutions ``conv_pw`` / ``conv_pwl`` (the dense channel mixing; the 3x3
  depthwise convolutions stay frozen). peft's Conv2d LoRA makes ``A`` a 1x1 conv
  ``c_in -> r`` and ``B`` a 1x1 conv ``r -> c_out``: the same low-rank update per pixel.

A model with none of them raises a ValueError.
"""

from __future__ import annotations

from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt
from torch import nn

from recsys.adapters import register_adapter
from recsys.adapters.backbone import TunedBackboneTower

FAMILIES = {  # module-name suffixes -> the module type they must have
    ("query", "value"): nn.Linear,
    ("q_proj", "v_proj"): nn.Linear,
    ("conv_pw", "conv_pwl"): nn.Conv2d,
}


def _suffixes(model: nn.Module) -> set[str]:
    """Last name component of every Linear / Conv2d of ``model``."""
    return {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def lora_targets(model: nn.Module, targets: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """The module-name suffixes LoRA wraps in ``model``: ``targets`` (each must name a Linear
    or Conv2d) or, when None, the first family of ``FAMILIES`` that the model has."""
    found = _suffixes(model)
    if targets is None:
        for family in FAMILIES:
            if set(family) <= found:
                return list(family)
        raise ValueError(
            f"{type(model).__name__} has none of the LoRA target families {list(FAMILIES)}: "
            f"set adapter.targets to the names of its Linear/Conv2d projections"
        )
    missing = sorted(set(targets) - found)
    if missing:
        raise ValueError(
            f"lora targets {missing} are not Linear or Conv2d modules of {type(model).__name__} "
            f"(adapter.targets=null picks query/value for transformers, conv_pw/conv_pwl for "
            f"timm EfficientNet/MobileNet)"
        )
    return list(targets)


def inject_lora(
    model: nn.Module,
    r: PositiveInt = 8,
    alpha: PositiveFloat = 16,
    dropout: NonNegativeFloat = 0.1,
    targets: list[str] | None = None,
) -> None:
    """Wrap ``model``'s target projections with LoRA adapters of rank ``r`` (in place)."""
    from peft import LoraConfig, inject_adapter_in_model

    names = lora_targets(model, targets)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=names)
    inject_adapter_in_model(config, model)


@register_adapter("lora")
class LoRATower(TunedBackboneTower):
    """LoRA on the encoders' pretrained projections (``inject_lora``)."""

    tune = staticmethod(inject_lora)
