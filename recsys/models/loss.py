"""Training losses of sequential recommenders (vectorised; every position predicts the next).

Each loss is built in two steps: the candidate scores of every predicting position
(``Scores``: logits, mask, label), then a loss over them. The scores depend on the model's
states and embeddings; the mask and the label only on the batch's ids, so two models (a
student and its teacher, ``recsys.train.distill``) scored over the same batch see exactly the
same candidates.

- ``in_batch_scores`` (IISAN, faithful): the B·(T+1) items of the batch, logits corrected by
  ``- log(train popularity)``, padding candidates masked, and for user i every candidate
  whose id occurs in user i's own sequence masked except the exact target column.
  ``cross_rank=True`` (DDP) pools the candidates of every process's batch (``all_gather``,
  gradients flow back to the owner): W·B·(T+1) negatives instead of B·(T+1)
  (docs/distributed.md).
- ``full_scores`` (improvement): the whole catalogue (pad excluded), optionally with the
  user's own other items masked.
- ``masked_cross_entropy``: the next-item loss over either (the in-batch or the full
  softmax loss).
- ``distillation_loss``: ``(1-α)·CE + α·τ²·KL(softmax(t/τ) ‖ softmax(s/τ))`` of a student's
  scores against a teacher's logits over the same candidates.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
from torch.nn import functional as F


class Scores(NamedTuple):
    """Next-item scores over a candidate set, one row per predicting position (V rows, C
    candidates).

    logits: [V,C] float32 (float64 stays), raw scores: masked columns keep their value.
    masked: [V,C] bool, True = not a candidate of that row (padding, the user's other
        items); a row's label column is never masked.
    label: [V] long, the column of each row's target.
    """

    logits: torch.Tensor
    masked: torch.Tensor
    label: torch.Tensor


def log_popularity(popularity: torch.Tensor) -> torch.Tensor:
    """``log`` of train popularity counts [N+1], counts clamped to >= 1 so the pad item and
    unseen items stay finite -> [N+1] (float; integer counts become float32)."""
    counts = popularity if popularity.is_floating_point() else popularity.float()
    return counts.clamp_min(1).log()


def _scores(
    queries: torch.Tensor,
    cand_emb: torch.Tensor,
    masked: torch.Tensor,
    label: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> Scores:
    """``Scores`` of ``queries`` [V,d] against ``cand_emb`` [C,d] (minus ``bias`` [C]), the
    label columns ``label`` [V] taken out of ``masked`` [V,C] (in place)."""
    logits = queries @ cand_emb.T
    if bias is not None:
        logits = logits - bias
    masked[torch.arange(label.numel(), device=label.device), label] = False
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # fp16/bf16 -> fp32
    return Scores(logits, masked, label)


def masked_cross_entropy(scores: Scores) -> torch.Tensor:
    """Mean cross-entropy of the rows of ``scores`` over their unmasked candidates (scalar;
    0, still in the graph, when there is no row)."""
    if scores.label.numel() == 0:
        return scores.logits.sum() * 0  # keeps every input in the graph (every DDP rank too)
    return F.cross_entropy(scores.logits.masked_fill(scores.masked, float("-inf")), scores.label)


def _log_softmax(logits: torch.Tensor, masked: torch.Tensor, tau: float) -> torch.Tensor:
    """``log softmax(logits / tau)`` over each row's unmasked candidates: [V,C], -inf where masked."""
    return F.log_softmax((logits / tau).masked_fill(masked, float("-inf")), dim=1)


def distillation_kl(scores: Scores, teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean over rows of KL(p_t ‖ p_s), p = softmax(logits / ``tau``) over the row's unmasked
    candidates (``scores.masked`` for both; a masked candidate has probability 0 in both and
    adds nothing). ``teacher_logits``: [V,C], the teacher's logits over the same candidates
    (no gradient needed). Returns a scalar (0 when there is no row)."""
    if teacher_logits.shape != scores.logits.shape:
        raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} do not match the student's "
                         f"{tuple(scores.logits.shape)}: they must score the same candidates")
    if scores.label.numel() == 0:
        return scores.logits.sum() * 0
    log_s = _log_softmax(scores.logits, scores.masked, tau)
    log_t = _log_softmax(teacher_logits.to(log_s.dtype), scores.masked, tau)
    # A masked column is -inf - -inf = NaN here: zeroed before p_t (= 0 there) multiplies it.
    log_ratio = (log_t - log_s).masked_fill(scores.masked, 0.0)
    return (log_t.exp() * log_ratio).sum(1).mean()


def distillation_loss(
    scores: Scores, teacher_logits: torch.Tensor, alpha: float, tau: float
) -> torch.Tensor:
    """``(1-alpha)·CE + alpha·tau²·KL(softmax(t/tau) ‖ softmax(s/tau))`` (Hinton et al.: τ²
    keeps the soft term's gradients on the scale of the hard one's as τ grows). ``scores``:
    the student's; ``teacher_logits`` [V,C]: the teacher's over the same candidates. alpha = 0
    is exactly ``masked_cross_entropy(scores)`` (the KL term adds exact zeros)."""
    ce = masked_cross_entropy(scores)
    return (1 - alpha) * ce + alpha * tau**2 * distillation_kl(scores, teacher_logits, tau)


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


def in_batch_scores(
    user_states: torch.Tensor,
    seq_items: torch.Tensor,
    item_emb: torch.Tensor,
    log_pop: torch.Tensor,
    cross_rank: bool = False,
    predict: torch.Tensor | None = None,
) -> Scores:
    """In-batch candidates with popularity correction and history masking.

    Args:
        user_states: [B,T,d], state at position t predicts ``seq_items[:, t+1]``.
        seq_items: [B,T+1] long, left-padded with 0 (inputs ``[:, :-1]``, targets ``[:, 1:]``).
        item_emb: [B,T+1,d], embeddings of ``seq_items`` (the candidates).
        log_pop: [N+1], log train popularity of each item id (see ``log_popularity``),
            subtracted from every candidate's logit.
        cross_rank: under DDP, also take every other process's batch items as candidates.
        predict: optional [B,T] bool, the positions to train; default: those whose input and
            target are real items (a left-padded window's first target follows a padding
            input: nothing to predict from).
    Returns:
        ``Scores`` [V,C] of the V predicted positions over C = B·(T+1) candidates (W·B·(T+1)
        with ``cross_rank``); column i·(T+1)+s is (user i, slot s).
    """
    b, t, d = user_states.shape
    cand_ids = seq_items.reshape(-1)  # [C]
    cand_emb, offset = item_emb.reshape(-1, d), 0
    if cross_rank:
        cand_ids, cand_emb, offset = gather_candidates(cand_ids, cand_emb)
    if predict is None:
        predict = (seq_items[:, :-1] != 0) & (seq_items[:, 1:] != 0)
    rows, pos = predict.nonzero(as_tuple=True)  # [V] positions that predict
    in_own_seq = (seq_items[:, :, None] == cand_ids[None, None, :]).any(1)  # [B,C]
    masked = in_own_seq[rows] | (cand_ids == 0)
    label = offset + rows * (t + 1) + pos + 1
    return _scores(user_states[rows, pos], cand_emb, masked, label, log_pop[cand_ids])


def full_scores(
    user_states: torch.Tensor,
    targets: torch.Tensor,
    all_item_emb: torch.Tensor,
    history: torch.Tensor | None = None,
) -> Scores:
    """The whole catalogue as candidates.

    Args:
        user_states: [B,T,d].
        targets: [B,T] long, next item of each position (0 = padding, skipped).
        all_item_emb: [N+1,d], row i = item i (row 0, the pad item, is never a candidate).
        history: optional [B,H] long (0-padded) ids masked for that user's positions, except
            each position's own target (pass the user's sequence to mask its other items).
    Returns:
        ``Scores`` [V,N+1] of the V non-padding targets; column i = item i.
    """
    rows, pos = (targets != 0).nonzero(as_tuple=True)
    masked = torch.zeros(targets.shape[0], all_item_emb.shape[0], dtype=torch.bool, device=targets.device)
    if history is not None:
        masked.scatter_(1, history, True)
    masked[:, 0] = True
    return _scores(user_states[rows, pos], all_item_emb, masked[rows], targets[rows, pos])

