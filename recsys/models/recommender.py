"""SequentialRecommender: item tower + user encoder + dot-product scoring.

Training: ``emb = item_tower(items)`` [B,W+1,64]; ``states = user_encoder(emb[:, :-1],
items[:, :-1] != 0)`` [B,W,64]; in-batch (IISAN) or full softmax over the next items (or,
given a teacher's logits over the same candidates, the distillation loss), plus
the item tower's auxiliary loss when it has one (``ItemTower.aux_loss``, e.g. MoMEF load
balancing). The tower is called once per training step, so that loss covers every item the
step embedded. Scoring: ``user_state · item_emb``, no temperature.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from recsys.adapters import ItemTower, check_groups, trainable
from recsys.models.loss import (
    Scores,
    distillation_loss,
    full_scores,
    in_batch_scores,
    masked_cross_entropy,
)

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

    def training_scores(
        self,
        batch_items: torch.Tensor,
        log_pop: torch.Tensor | None = None,
        loss: str = "in_batch",
        mask_history: bool = True,
        cross_rank_negatives: bool = False,
        predict: torch.Tensor | None = None,
    ) -> Scores:
        """Next-item scores of a train batch over the ``loss``'s candidates.

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
            ``Scores`` [V,C] (``recsys.models.loss``): C = B·(W+1) in-batch candidates, or the
            N+1 catalogue items for ``full``. The mask and labels depend on the arguments
            alone, so every model scored with the same arguments has the same candidates.
        """
        if loss == "in_batch":
            if log_pop is None:
                raise ValueError("the in_batch loss needs log_pop (log train popularity)")
            emb = self.item_tower(batch_items)
            states = self.user_states(batch_items[:, :-1], emb[:, :-1])
            return in_batch_scores(states, batch_items, emb, log_pop, cross_rank_negatives, predict)
        if loss == "full":
            # One tower call: with gradients, chunks would keep every activation anyway.
            all_emb = self.all_item_embeddings(chunk_size=None)
            states = self.user_states(batch_items[:, :-1], all_emb[batch_items[:, :-1]])
            history = batch_items if mask_history else None
            if predict is None:
                predict = (batch_items[:, :-1] != 0) & (batch_items[:, 1:] != 0)  # not after a pad input
            targets = batch_items[:, 1:].masked_fill(~predict, 0)
            return full_scores(states, targets, all_emb, history)
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")

    def training_loss(
        self,
        batch_items: torch.Tensor,
        log_pop: torch.Tensor | None = None,
        *,
        teacher_logits: torch.Tensor | None = None,
        alpha: float = 0.0,
        tau: float = 1.0,
        **options: Any,
    ) -> torch.Tensor:
        """Next-item loss of a train batch: ``batch_items``, ``log_pop`` and ``options``
        (``loss``, ``mask_history``, ``cross_rank_negatives``, ``predict``) are
        ``training_scores``'s.

        Args:
            teacher_logits: optional [V,C], a teacher's logits over the same candidates
                (``recsys.train.distill``): the loss is then the ``distillation_loss``
                ``(1-alpha)·CE + alpha·tau²·KL``; None: the cross-entropy alone.
        Returns:
            scalar loss: the next-item loss + the item tower's ``aux_loss()`` (if not None).
        """
        scores = self.training_scores(batch_items, log_pop, **options)
        if teacher_logits is None:
            value = masked_cross_entropy(scores)
        else:
            value = distillation_loss(scores, teacher_logits, alpha, tau)
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
