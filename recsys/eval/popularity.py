"""Most-popular baseline: every item's score is its training interaction count.

It can be expressed as embeddings (``item_emb = popularity [N+1, 1]``, ``user_emb = ones
[B, 1]``) so the standard evaluator ranks it, but that scores every user against every item:
O(U·N), hours for a million users and items. ``popularity_ranks`` gives the very same ranks
(same exclusions, same tie policy) in O(N log N + U·H), because the scores do not depend on
the user: the items above the target are counted once in the sorted popularity, then the
user's own history items above (or tied with) it are subtracted. Counts are compared in
float64, exact for any realistic count (float32 would merge counts above 2**24 into ties).

Example:
    >>> from recsys.eval.ranking import full_ranking_ranks
    >>> pop = item_popularity(torch.tensor([1, 2, 2, 3, 3, 3]), num_items=4)
    >>> pop.tolist()
    [0, 1, 2, 3, 0]
    >>> item_emb = popularity_embeddings(pop)
    >>> user_emb = popularity_user_embeddings(2, item_emb)
    >>> full_ranking_ranks(user_emb, item_emb, torch.tensor([2, 4]), torch.tensor([[3], [0]]))
    tensor([1, 4])
"""

from __future__ import annotations

import torch
from torch import Tensor

from recsys.eval.metrics import RankingMetrics
from recsys.eval.ranking import TIE_POLICIES, mask_repeated_targets


def item_popularity(train_items: Tensor, num_items: int) -> Tensor:
    """Interaction counts ``[N+1]`` (int64) from a flat tensor of training item ids.

    Padding ids (0) are not counted: entry 0 is always 0.
    """
    counts = torch.bincount(train_items.long().flatten(), minlength=num_items + 1)
    counts[0] = 0
    return counts


def popularity_embeddings(train_popularity: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """Item table ``[N+1, 1]`` whose single column is the popularity (row 0 = padding)."""
    return train_popularity.to(dtype).unsqueeze(1)


def popularity_user_embeddings(batch_size: int, item_emb: Tensor) -> Tensor:
    """User table ``[B, 1]`` of ones, on ``item_emb``'s device and dtype."""
    return torch.ones(batch_size, 1, dtype=item_emb.dtype, device=item_emb.device)


def popularity_ranks(
    popularity: Tensor,
    target: Tensor,
    history: Tensor,
    tie_policy: str = "pessimistic",
    mask_target: bool = False,
) -> Tensor:
    """Ranks of the targets under the most-popular scorer, equal to ``full_ranking_ranks``
    with popularity embeddings (see module docstring).

    Args:
        popularity: ``[N+1]`` training counts (entry 0 = padding, never a candidate).
        target: ``[B]`` item ids in 1..N.
        history: ``[B, H]`` seen item ids, 0-padded, duplicates allowed; masked from the
            candidates.
        tie_policy: ``pessimistic`` | ``optimistic`` | ``average``.
        mask_target: a target found in its history is masked too (rank N + 1).

    Returns:
        ``[B]`` int64 ranks (float64 for ``average``).
    """
    if tie_policy not in TIE_POLICIES:
        raise ValueError(f"tie_policy must be one of {TIE_POLICIES}, got {tie_policy!r}")
    scores = popularity.double()
    ordered = torch.sort(scores[1:]).values  # real items only
    s = scores[target]
    above = ordered.numel() - torch.searchsorted(ordered, s, right=True)  # items with score > s
    ties = torch.searchsorted(ordered, s, right=True) - torch.searchsorted(ordered, s) - 1  # minus target
    seen = torch.sort(history, dim=1).values
    first = torch.ones_like(seen, dtype=torch.bool)  # each distinct id once
    first[:, 1:] = seen[:, 1:] != seen[:, :-1]
    counted = first & (seen != 0) & (seen != target[:, None])
    seen_scores = scores[seen]
    above = above - (counted & (seen_scores > s[:, None])).sum(dim=1)
    ties = ties - (counted & (seen_scores == s[:, None])).sum(dim=1)
    if tie_policy == "average":
        ranks = 1.0 + above.double() + 0.5 * ties.double()
    else:
        ranks = 1 + above + (ties if tie_policy == "pessimistic" else 0)
    return mask_repeated_targets(ranks, target, history, scores.numel() - 1) if mask_target else ranks


@torch.no_grad()
def evaluate_popularity(
    datamodule,
    ks: tuple[int, ...] = (5, 10, 20),
    tie_policy: str = "pessimistic",
    stage: str = "test",
    mask_target: bool = False,
) -> dict[str, float]:
    """Most-popular baseline on a datamodule's val or test users, same protocol as models.

    Args:
        datamodule: a set-up ``SequenceDataModule`` (``train_popularity`` [N+1] and
            ``val_dataloader``/``test_dataloader`` yielding inputs/target/history).
        stage: "val" or "test".
        mask_target: mask a target that repeats a history item (``popularity_ranks``).

    Returns:
        ``{"hr@10": mean, ...}`` over every user of the split.
    """
    popularity = datamodule.train_popularity
    metrics = RankingMetrics(ks=ks)
    loader = datamodule.test_dataloader() if stage == "test" else datamodule.val_dataloader()
    for batch in loader:
        ranks = popularity_ranks(popularity, batch["target"], batch["history"], tie_policy, mask_target)
        metrics.update(ranks)
    return {k: float(v) for k, v in metrics.compute().items()}
