"""Full-ranking evaluation: the target's rank among all items by counting, never sorting.

Leave-one-out protocol: every user has one held-out ``target`` item; it is ranked against
all items ``1..N`` (row 0 of the item table is the padding item and is never a candidate)
minus the items in the user's ``history`` (seen items are masked). A target that repeats a
history item is either masked with the rest of the history (``mask_target=True``, the
official IISAN evaluator: such a user can never hit, its rank is ``N + 1``) or kept as the one
unmasked history item (``mask_target=False``; the mask then singles it out among the items
the model scores highly, see docs/reference-departures.md).

The rank is ``1 + #(candidates scored strictly higher) + tie term``, with the tie term set
by ``tie_policy`` over the ``e`` other candidates whose score equals the target's exactly:

* ``"pessimistic"`` (default): ``+ e`` - every tie is ranked above the target, so a
  degenerate scorer (all scores equal) gets the worst rank, never an inflated one;
* ``"optimistic"``: ``+ 0``;
* ``"average"``: ``+ e / 2`` - the expected rank under a random tie break (float).

Scores are computed chunk by chunk of items on the embeddings' device, so memory is
``O(B * chunk_size)`` whatever ``N``. The target scores are taken from the very same
chunk matmul (row subset of the chunk that holds the target), so they are bit-identical
to the target's column in the counting pass: an item with the same embedding as the
target ties exactly, and the target is excluded from its own count by index.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

TiePolicy = Literal["pessimistic", "optimistic", "average"]
TIE_POLICIES: tuple[str, ...] = ("pessimistic", "optimistic", "average")


def _chunk_scores(user_emb: Tensor, item_chunk: Tensor) -> Tensor:
    """Dot-product scores ``[B, C]`` of users ``[B, d]`` against one item chunk ``[C, d]``."""
    return user_emb @ item_chunk.T


def _chunk_bounds(num_items: int, chunk_size: int) -> list[tuple[int, int]]:
    """Half-open item-id ranges ``[start, end)`` covering the real items ``1..N``."""
    return [(s, min(s + chunk_size, num_items + 1)) for s in range(1, num_items + 1, chunk_size)]


def _target_scores(
    user_emb: Tensor, item_emb: Tensor, target: Tensor, bounds: list[tuple[int, int]]
) -> Tensor:
    """Score ``[B]`` of each user's target, computed by the same chunk matmul as the count."""
    scores = torch.empty(target.shape[0], dtype=user_emb.dtype, device=user_emb.device)
    for start, end in bounds:
        rows = torch.nonzero((target >= start) & (target < end)).squeeze(1)
        if rows.numel() == 0:
            continue
        chunk = _chunk_scores(user_emb[rows], item_emb[start:end])
        scores[rows] = chunk.gather(1, (target[rows] - start).unsqueeze(1)).squeeze(1)
    return scores


def _excluded_mask(excluded: Tensor, start: int, end: int) -> Tensor:
    """Boolean ``[B, end - start]``: True where an item id of ``excluded [B, K]`` lies in chunk.

    Ids outside the chunk (including padding 0) are sent to a spare column that is dropped,
    so a single vectorised ``scatter_`` with all-True values handles duplicates safely.
    """
    width = end - start
    local = excluded - start
    outside = (local < 0) | (local >= width)
    local = local.masked_fill(outside, width)
    mask = torch.zeros(excluded.shape[0], width + 1, dtype=torch.bool, device=excluded.device)
    mask.scatter_(1, local, True)
    return mask[:, :width]


def full_ranking_ranks(
    user_emb: Tensor,
    item_emb: Tensor,
    target: Tensor,
    history: Tensor,
    tie_policy: TiePolicy = "pessimistic",
    chunk_size: int = 4096,
    mask_target: bool = False,
) -> Tensor:
    """1-based rank of each user's target among all unseen items ``1..N``, by counting.

    Args:
        user_emb: ``[B, d]`` user (sequence) representations; moved to ``item_emb``'s
            device and dtype.
        item_emb: ``[N+1, d]`` item table; row 0 is the padding item and is never ranked.
        target: ``[B]`` long, held-out item ids in ``1..N``.
        history: ``[B, H]`` long, seen item ids, 0-padded; masked from the candidates.
            May have ``H == 0``.
        tie_policy: ``"pessimistic"`` (ties count above the target), ``"optimistic"``
            (ties count below) or ``"average"`` (half of the ties count above).
        chunk_size: items scored per matmul; peak memory is about ``B * chunk_size``
            scores. The ranks do not depend on it.
        mask_target: a target found in its user's history is masked too (rank ``N + 1``);
            False ranks it like any unseen item.

    Returns:
        ``[B]`` ranks on ``item_emb``'s device: ``int64`` for pessimistic/optimistic,
        ``float64`` (possibly fractional, e.g. ``3.5``) for average. Apart from masked
        targets, the worst rank is the number of candidates ``N - |unique history minus
        target|``.

    Raises:
        ValueError: on an unknown tie policy, a target outside ``1..N``, or a NaN target
            score (other items with NaN scores are never counted above the target).

    Example:
        >>> item_emb = torch.tensor([[0.0], [3.0], [1.0], [2.0], [2.0]])  # N = 4
        >>> user_emb = torch.ones(1, 1)
        >>> hist = torch.tensor([[1, 0]])  # item 1 (score 3) was seen: masked
        >>> full_ranking_ranks(user_emb, item_emb, torch.tensor([3]), hist)
        tensor([2])
        >>> full_ranking_ranks(user_emb, item_emb, torch.tensor([3]), hist, "optimistic")
        tensor([1])
        >>> full_ranking_ranks(user_emb, item_emb, torch.tensor([3]), hist, "average")
        tensor([1.5000], dtype=torch.float64)
    """
    if tie_policy not in TIE_POLICIES:
        raise ValueError(f"tie_policy must be one of {TIE_POLICIES}, got {tie_policy!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    device, num_items = item_emb.device, item_emb.shape[0] - 1
    user_emb = user_emb.to(device=device, dtype=item_emb.dtype)
    target = target.to(device=device, dtype=torch.long)
    history = history.to(device=device, dtype=torch.long)
    if target.numel() and (int(target.min()) < 1 or int(target.max()) > num_items):
        raise ValueError(f"targets must lie in 1..{num_items}")

    bounds = _chunk_bounds(num_items, chunk_size)
    target_score = _target_scores(user_emb, item_emb, target, bounds)
    if bool(torch.isnan(target_score).any()):
        raise ValueError("NaN target scores: the ranking would be meaningless")
    # The target is excluded from its own count by index; history ids equal to the target
    # are excluded through the same index, so the target is never treated as seen.
    excluded = torch.cat([target.unsqueeze(1), history], dim=1)

    higher = torch.zeros_like(target)
    equal = torch.zeros_like(target)
    threshold = target_score.unsqueeze(1)
    for start, end in bounds:
        scores = _chunk_scores(user_emb, item_emb[start:end])
        scores.masked_fill_(_excluded_mask(excluded, start, end), float("nan"))  # never counted
        higher += (scores > threshold).sum(dim=1)
        if tie_policy != "optimistic":
            equal += (scores == threshold).sum(dim=1)

    if tie_policy == "average":
        ranks = 1.0 + higher.double() + 0.5 * equal.double()
    else:
        ranks = 1 + higher + equal
    return mask_repeated_targets(ranks, target, history, num_items) if mask_target else ranks


def mask_repeated_targets(ranks: Tensor, target: Tensor, history: Tensor, num_items: int) -> Tensor:
    """``ranks`` [B] with rank ``N + 1`` (never a hit) for users whose target occurs in their
    ``history`` [B, H]: the official evaluator masks every history item, a repeated target
    included."""
    repeated = (history == target.unsqueeze(1)).any(dim=1)
    return ranks.masked_fill(repeated, num_items + 1)


def top_k_of(scores: Tensor, ids: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``min(k, C)`` best of each row's ``(score, id)`` pairs (``scores``, ``ids``:
    ``[B, C]``), best first; among exactly tied scores the lower id comes first."""
    by_id = torch.argsort(ids, dim=1)  # then a stable sort by score: ties by id
    scores, ids = scores.gather(1, by_id), ids.gather(1, by_id)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), ids.gather(1, order)


def chunked_topk(
    user_emb: Tensor,
    item_emb: Tensor,
    k: int,
    excluded: Tensor | None = None,
    chunk_size: int = 65536,
    score: Callable[[Tensor, Tensor], Tensor] = _chunk_scores,
) -> tuple[Tensor, Tensor]:
    """Exact top-``k`` items ``1..N`` per user, scoring the catalogue chunk by chunk.

    Each chunk's own top-k (``torch.topk``, linear in the chunk) is merged into a running
    top-k, so memory is ``O(B * (chunk_size + k))`` whatever ``N`` and the scores equal a
    top-k over the full score matrix. Among items whose scores tie exactly, the merged order
    puts the lower id first; which of them make the cut at the k-th place is arbitrary.

    Args:
        user_emb: ``[B, d]``; moved to ``item_emb``'s device and dtype.
        item_emb: ``[N+1, d]``; row 0 (padding) is never returned.
        k: items per user (at most N).
        excluded: ``[B, H]`` long item ids never returned (e.g. the history; 0 = padding).
        chunk_size: items scored per matmul.
        score: floating scores ``[B, C]`` of ``user_emb`` against a chunk ``[C, d]`` of
            ``item_emb``, higher is better; the dot product by default (the binary serving
            format passes minus the Hamming distance between sign codes).

    Returns:
        (scores ``[B, k]`` descending, item ids ``[B, k]`` long). Users with fewer than k
        candidates get ``-inf`` scores at the end.
    """
    num_items = item_emb.shape[0] - 1
    if not 1 <= k <= num_items:
        raise ValueError(f"k must be in 1..{num_items}, got {k}")
    device = item_emb.device
    user_emb = user_emb.to(device=device, dtype=item_emb.dtype)
    best: tuple[Tensor, Tensor] | None = None
    for start, end in _chunk_bounds(num_items, chunk_size):
        scores = score(user_emb, item_emb[start:end])
        if excluded is not None:
            mask = _excluded_mask(excluded.to(device=device, dtype=torch.long), start, end)
            scores.masked_fill_(mask, float("-inf"))
        top = torch.topk(scores, min(k, end - start), dim=1)
        pool = (top.values, top.indices + start)
        if best is not None:
            pool = (torch.cat([best[0], pool[0]], dim=1), torch.cat([best[1], pool[1]], dim=1))
        best = top_k_of(*pool, k)
    return best
