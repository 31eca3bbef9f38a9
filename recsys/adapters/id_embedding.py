"""ID-only item tower (the ID-SASRec baseline): one learned 64-d vector per item id."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import PositiveFloat
from torch import nn

from recsys.adapters import ItemTower, TowerContext, register_adapter, trainable
from recsys.models.init import init_weight


@register_adapter("id")
class IDEmbeddingTower(ItemTower):
    """``nn.Embedding(N+1, d_model, padding_idx=0)``, pad row zero.

    Args:
        num_items: N, the number of real items.
        d_model: embedding width (64).
        init: ``xavier_normal`` (the reference: std sqrt(2 / (N+1 + d)), about 0.01 for 20k
            items) | ``normal`` (N(0, init_std), RecBole's).
        init_std: the standard deviation of ``init="normal"``.
    """

    reads = None
    layer_schedule = False

    def __init__(
        self,
        num_items: int,
        d_model: int = 64,
        init: Literal["xavier_normal", "normal"] = "xavier_normal",
        init_std: PositiveFloat = 0.02,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(num_items + 1, d_model, padding_idx=0)
        init_weight(self.embedding.weight, init, init_std)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    @classmethod
    def from_context(cls, context: TowerContext, **options) -> IDEmbeddingTower:
        return cls(context.num_items, d_model=context.d_model, **options)

    @property
    def num_items(self) -> int:
        return self.embedding.num_embeddings - 1

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        """``item_ids`` [...] long -> [..., d_model]."""
        return self.embedding(item_ids)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"adapter": [], "text_head": [], "head": trainable(self.embedding.parameters())}
