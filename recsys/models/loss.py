"""Training losses of sequential recommenders (vectorised; every position predicts the next).

- ``in_batch_softmax_loss`` (IISAN, faithful): softmax over the B·(T+1) items of the batch,
  logits corrected by ``- log(train popularity)``, padding candidates masked, and for user i
  every candidate whose id occurs in user i's own sequence masked except the exact target
  column.
- ``full_softmax_loss`` (improvement): exact softmax over the whole catalogue (pad excluded),
  optionally with the user's own other items masked.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def log_popularity(popularity: torch.Tensor) -> torch.Tensor:
    """``log`` of train popularity counts [N+1], counts clamped to >= 1 so the pad item and
    unseen items stay finite -> [N+1] (float; integer counts become float32)."""
    counts = popularity if popularity.is_floating_point() else popularity.float()
    return counts.clamp_min(1).log()


def _masked_cross_entropy(
    logits: torch.Tensor, masked: torch.Tensor, label: torch.Tensor
) -> torch.Tensor:
    """Mean CE of ``logits`` [V,C] with ``masked`` [V,C] bool set to -inf, except the label
    column ``label`` [V] (always kept)."""
    masked[torch.arange(label.numel(), device=label.device), label] = False
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp16/bf16 -> fp32
    return F.cross_entropy(logits.masked_fill(masked, float("-inf")), label)


def in_batch_softmax_loss(
    user_states: torch.Tensor,
    seq_items: torch.Tensor,
    item_emb: torch.Tensor,
    log_pop: torch.Tensor,
) -> torch.Tensor:
    """In-batch sampled softmax with popularity correction and history masking.

    Args:
        user_states: [B,T,d], state at position t predicts ``seq_items[:, t+1]``.
        seq_items: [B,T+1] long, left-padded with 0 (inputs ``[:, :-1]``, targets ``[:, 1:]``).
        item_emb: [B,T+1,d], embeddings of ``seq_items`` (the candidates).
        log_pop: [N+1], log train popularity of each item id (see ``log_popularity``).
    Returns:
        scalar, mean cross-entropy over positions whose input and target are real items (a
        left-padded window's first target follows a padding input: nothing to predict from).
    """
    b, t, d = user_states.shape
    cand_ids = seq_items.reshape(-1)  # [C], C = B·(T+1); column i·(T+1)+s is (user i, slot s)
    real = (seq_items[:, :-1] != 0) & (seq_items[:, 1:] != 0)
    rows, pos = real.nonzero(as_tuple=True)  # [V] positions that predict
    if rows.numel() == 0:
        return user_states.sum() * 0
    logits = user_states[rows, pos] @ item_emb.reshape(-1, d).T - log_pop[cand_ids]  # [V,C]
    in_own_seq = (seq_items[:, :, None] == cand_ids[None, None, :]).any(1)  # [B,C]
    masked = in_own_seq[rows] | (cand_ids == 0)
    return _masked_cross_entropy(logits, masked, rows * (t + 1) + pos + 1)


def full_softmax_loss(
    user_states: torch.Tensor,
    targets: torch.Tensor,
    all_item_emb: torch.Tensor,
    history: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax over the whole catalogue.

    Args:
        user_states: [B,T,d].
        targets: [B,T] long, next item of each position (0 = padding, skipped).
        all_item_emb: [N+1,d], row i = item i (row 0, the pad item, is never a candidate).
        history: optional [B,H] long (0-padded) ids masked for that user's positions, except
            each position's own target (pass the user's sequence to mask its other items).
    Returns:
        scalar, mean cross-entropy over non-padding targets.
    """
    rows, pos = (targets != 0).nonzero(as_tuple=True)
    if rows.numel() == 0:
        return user_states.sum() * 0
    logits = user_states[rows, pos] @ all_item_emb.T  # [V,N+1]
    masked = torch.zeros(
        targets.shape[0], all_item_emb.shape[0], dtype=torch.bool, device=targets.device
    )
    if history is not None:
        masked.scatter_(1, history, True)
    masked[:, 0] = True
    return _masked_cross_entropy(logits, masked[rows], targets[rows, pos])
