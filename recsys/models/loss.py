"""Training losses of sequential recommenders (vectorised; every position predicts the next).

- ``in_batch_softmax_loss`` (IISAN, faithful): softmax over the B·(T+1) items of the batch,
  logits corrected by ``- log(train popularity)``, padding candidates masked, and for user i
  every candidate whose id occurs in user i's own sequence masked except the exact target
  column. ``cross_rank=True`` (DDP) pools the candidates of every process's batch
  (``all_gather``, gradients flow back to the owner): W·B·(T+1) negatives instead of B·(T+1)
  (docs/distributed.md).
- ``full_softmax_loss`` (improvement): exact softmax over the whole catalogue (pad excluded),
  optionally with the user's own other items masked.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
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


class _AllGatherRows(torch.autograd.Function):
    """Differentiable all-gather of a [C,d] block -> [W·C,d] (rank order). Backward sums every
    rank's gradient of the gathered rows and hands each rank its own block. Written here, not
    taken from ``torch.distributed.nn.functional.all_gather``: with gloo that one leaves the
    process aborting at exit ("terminate called without an active exception", torch 2.14)."""

    @staticmethod
    def forward(ctx, block: torch.Tensor) -> torch.Tensor:
        blocks = [torch.empty_like(block) for _ in range(dist.get_world_size())]
        dist.all_gather(blocks, block.contiguous())
        return torch.cat(blocks)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def gather_candidates(ids: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Every process's candidates, rank order: ids [C] -> [W·C], emb [C,d] -> [W·C,d] (the
    embeddings keep their autograd graph: each rank's gradient reaches the rank that owns the
    rows), and the offset of this rank's block. Needs equal C on every rank (the training
    sampler gives every rank as many windows). No process group: returned as they are."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return ids, emb, 0
    all_ids = [torch.empty_like(ids) for _ in range(dist.get_world_size())]
    dist.all_gather(all_ids, ids.contiguous())
    return torch.cat(all_ids), _AllGatherRows.apply(emb), dist.get_rank() * ids.numel()


def in_batch_softmax_loss(
    user_states: torch.Tensor,
    seq_items: torch.Tensor,
    item_emb: torch.Tensor,
    log_pop: torch.Tensor,
    cross_rank: bool = False,
    predict: torch.Tensor | None = None,
) -> torch.Tensor:
    """In-batch sampled softmax with popularity correction and history masking.

    Args:
        user_states: [B,T,d], state at position t predicts ``seq_items[:, t+1]``.
        seq_items: [B,T+1] long, left-padded with 0 (inputs ``[:, :-1]``, targets ``[:, 1:]``).
        item_emb: [B,T+1,d], embeddings of ``seq_items`` (the candidates).
        log_pop: [N+1], log train popularity of each item id (see ``log_popularity``).
        cross_rank: under DDP, also take every other process's batch items as candidates.
        predict: optional [B,T] bool, the positions to train; default: those whose input and
            target are real items (a left-padded window's first target follows a padding
            input: nothing to predict from).
    Returns:
        scalar, mean cross-entropy over the predicted positions.
    """
    b, t, d = user_states.shape
    cand_ids = seq_items.reshape(-1)  # [C], C = B·(T+1); column i·(T+1)+s is (user i, slot s)
    cand_emb, offset = item_emb.reshape(-1, d), 0
    if cross_rank:
        cand_ids, cand_emb, offset = gather_candidates(cand_ids, cand_emb)
    if predict is None:
        predict = (seq_items[:, :-1] != 0) & (seq_items[:, 1:] != 0)
    rows, pos = predict.nonzero(as_tuple=True)  # [V] positions that predict
    if rows.numel() == 0:
        return (user_states.sum() + cand_emb.sum()) * 0  # keeps every rank in the graph
    logits = user_states[rows, pos] @ cand_emb.T - log_pop[cand_ids]  # [V,C]
    in_own_seq = (seq_items[:, :, None] == cand_ids[None, None, :]).any(1)  # [B,C]
    masked = in_own_seq[rows] | (cand_ids == 0)
    return _masked_cross_entropy(logits, masked, offset + rows * (t + 1) + pos + 1)


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
