"""``lora``: low-rank updates of the PRETRAINED query and value projections (Hu et al. 2022)
through peft (``inject_adapter_in_model``; extra ``lora``). Each target ``W x`` becomes
``W x + (alpha/r)·B A x`` with ``W`` the pretrained (frozen) weight, ``A`` Kaiming-uniform,
``B = 0``: at initialisation the model computes exactly what the frozen one does (the
reference replaced the pretrained Q/V weights with random ones; that flaw is not kept).
Only ``A``, ``B`` (``adapter`` group, lr 1e-4), the heads and the user encoder train.

Targets: modules named ``query`` / ``value`` (transformers BERT/MiniLM/ViT self-attention).
A model without them (timm EfficientNet: no attention) raises a ValueError.
"""

from __future__ import annotations

from torch import nn

from recsys.adapters.backbone import register_tuned


def inject_lora(
    model: nn.Module,
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.1,
    targets: tuple[str, ...] | list[str] = ("query", "value"),
) -> None:
    """Wrap ``model``'s ``targets`` projections with LoRA adapters of rank ``r`` (in place)."""
    from peft import LoraConfig, inject_adapter_in_model

    found = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = sorted(set(targets) - found)
    if missing:
        raise ValueError(
            f"lora targets {missing} are not Linear modules of {type(model).__name__} "
            f"(LoRA here wraps transformer attention projections; use adapter=fft or "
            f"adapter=bitfit for convolutional encoders)"
        )
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets))
    inject_adapter_in_model(config, model)


register_tuned("lora", inject_lora)
