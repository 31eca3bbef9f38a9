"""ID-only item tower (the ID-SASRec baseline): one learned 64-d vector per item id."""

from __future__ import annotations

import torch
from torch import nn

from recsys.adapters import ItemTower, TowerContext, register_adapter, trainable


@register_adapter("id")
class IDEmbeddingTower(ItemTower):
    """``nn.Embedding(N+1, d_model, padding_idx=0)``, xavier-normal init, pad row zero.

    Args:
        num_items: N, the number of real items.
        d_model: embedding width (64).
    """

    reads = None
    layer_schedule = False

    def __init__(self, num_items: int, d_model: int = 64) -> None:
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(num_items + 1, d_model, padding_idx=0)
        nn.init.xavier_normal_(self.embedding.weight)
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
