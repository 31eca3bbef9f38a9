"""SequentialRecommender: item tower + user encoder + dot-product scoring.

Training: ``emb = item_tower(items)`` [B,W+1,64]; ``states = user_encoder(emb[:, :-1],
items[:, :-1] != 0)`` [B,W,64]; in-batch (IISAN) or full softmax over the next items, plus
the item tower's auxiliary loss when it has one (``ItemTower.aux_loss``, e.g. MoMEF load
balancing). The tower is called once per training step, so that loss covers every item the
step embedded. Scoring: ``user_state · item_emb``, no temperature.
"""

from __future__ import annotations

import torch
from torch import nn

from recsys.adapters import ItemTower, check_groups, trainable
from recsys.models.loss import full_softmax_loss, in_batch_softmax_loss

LOSSES = ("in_batch", "full")


class SequentialRecommender(nn.Module):
    """Args: item_tower (ids [...] -> [..., d]); user_encoder ((emb [B,T,d], pad_mask [B,T])
    -> [B,T,d])."""

    def __init__(self, item_tower: ItemTower, user_encoder: nn.Module) -> None:
        super().__init__()
        self.item_tower = item_tower
        self.user_encoder = user_encoder

    @property
    def num_items(self) -> int:
        return self.item_tower.num_items

    def item_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids`` [...] long -> [..., d]."""
        return self.item_tower(ids)

    def all_item_embeddings(self, chunk_size: int | None = 4096) -> torch.Tensor:
        """Embeddings of the whole catalogue, [N+1, d], row 0 (padding) = zeros; computed in
        chunks of ``chunk_size`` ids, None = one call (wrap in ``torch.no_grad()`` for
        evaluation)."""
        device = next(self.parameters()).device
        ids = torch.arange(1, self.num_items + 1, device=device)
        rows = [self.item_tower(chunk) for chunk in ids.split(chunk_size or self.num_items)]
        return torch.cat([rows[0].new_zeros(1, rows[0].shape[-1]), *rows])

    def user_states(self, inputs: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        """States of every position: ``inputs`` [B,T] left-padded ids (``emb`` [B,T,d] their
        embeddings if already computed) -> [B,T,d]."""
        if emb is None:
            emb = self.item_tower(inputs)
        return self.user_encoder(emb, inputs != 0)

    def user_embedding(self, inputs: torch.Tensor) -> torch.Tensor:
        """User representation = state at the last (most recent) position: [B,W] -> [B,d]."""
        return self.user_states(inputs)[:, -1]

    def training_loss(
        self,
        batch_items: torch.Tensor,
        log_pop: torch.Tensor | None = None,
        loss: str = "in_batch",
        mask_history: bool = True,
        cross_rank_negatives: bool = False,
        predict: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-item loss of a train batch.

        Args:
            batch_items: [B,W+1] long, left-padded (inputs ``[:, :-1]``, targets ``[:, 1:]``).
            log_pop: [N+1] log train popularity (needed by ``in_batch``).
            loss: ``in_batch`` (IISAN, faithful) | ``full`` (softmax over all items).
            mask_history: ``full`` only: mask the user's other items of the window.
            cross_rank_negatives: ``in_batch`` under DDP: every process's batch items are
                candidates (``all_gather``).
            predict: optional [B,W] bool, the positions that carry a loss (default: every
                position whose input and target are real items).
        Returns:
            scalar loss: the next-item loss + the item tower's ``aux_loss()`` (if not None).
        """
        if loss == "in_batch":
            if log_pop is None:
                raise ValueError("the in_batch loss needs log_pop (log train popularity)")
            emb = self.item_tower(batch_items)
            states = self.user_states(batch_items[:, :-1], emb[:, :-1])
            value = in_batch_softmax_loss(states, batch_items, emb, log_pop, cross_rank_negatives, predict)
        elif loss == "full":
            # One tower call: with gradients, chunks would keep every activation anyway.
            all_emb = self.all_item_embeddings(chunk_size=None)
            states = self.user_states(batch_items[:, :-1], all_emb[batch_items[:, :-1]])
            history = batch_items if mask_history else None
            if predict is None:
                predict = (batch_items[:, :-1] != 0) & (batch_items[:, 1:] != 0)  # not after a pad input
            targets = batch_items[:, 1:].masked_fill(~predict, 0)
            value = full_softmax_loss(states, targets, all_emb, history)
        else:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        aux = self.item_tower.aux_loss()
        return value if aux is None else value + aux

    def param_groups(self, lrs: dict[str, float]) -> list[dict]:
        """Optimiser groups ``[{"name", "params", "lr"}, ...]`` (empty groups dropped).

        ``lrs`` keys: ``adapter`` (side blocks, gates, alignment; 1e-4), ``text_head`` (5e-5),
        ``other`` (every other trainable parameter: other heads, fusion, ID embeddings, user
        encoder; 2e-4). Every trainable parameter is in exactly one group.
        """
        tower = self.item_tower.param_groups()
        groups = {
            "adapter": tower["adapter"],
            "text_head": tower["text_head"],
            "other": tower["head"] + trainable(self.user_encoder.parameters()),
        }
        check_groups(self, groups)
        return [
            {"name": name, "params": params, "lr": float(lrs[name])}
            for name, params in groups.items()
            if params
        ]
