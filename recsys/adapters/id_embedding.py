"""ID-only item tower (the ID-SASRec baseline): one learned 64-d vector per item id."""

from __future__ import annotations

import torch
from torch import nn

from recsys.adapters import ItemTower, register_adapter, trainable
from recsys.cache.features import FeatureStore


@register_adapter("id")
class IDEmbeddingTower(ItemTower):
    """``nn.Embedding(N+1, d_model, padding_idx=0)``, xavier-normal init, pad row zero.

    Args:
        store: only used for N when ``num_items`` is not given (features are not read).
        num_items: N, the number of real items.
        d_model: embedding width (64).
        layers: unused (no features); accepted so every adapter config builds the same way.
    """

    def __init__(
        self,
        store: FeatureStore | None = None,
        num_items: int | None = None,
        d_model: int = 64,
        layers: None = None,
    ) -> None:
        super().__init__()
        if num_items is None:
            if store is None:
                raise ValueError("the id tower needs num_items or a feature store")
            num_items = store.num_items
        self.d_model = d_model
        self.embedding = nn.Embedding(num_items + 1, d_model, padding_idx=0)
        nn.init.xavier_normal_(self.embedding.weight)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    @property
    def num_items(self) -> int:
        return self.embedding.num_embeddings - 1

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        """``item_ids`` [...] long -> [..., d_model]."""
        return self.embedding(item_ids)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"adapter": [], "text_head": [], "head": trainable(self.embedding.parameters())}
