"""Most-popular baseline expressed as embeddings, so the standard evaluator ranks it.

Each item's score is its training interaction count: ``item_emb = popularity [N+1, 1]`` and
``user_emb = ones [B, 1]``, hence ``user_emb @ item_emb.T`` = popularity for every user.
Popularity has many exact ties (items with equal counts), which the evaluator's explicit
tie policy handles (pessimistic by default). Embeddings default to float64 so counts stay
exact (float32 would merge distinct counts above 2**24 into artificial ties).

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
from recsys.eval.ranking import full_ranking_ranks


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


@torch.no_grad()
def evaluate_popularity(
    datamodule,
    ks: tuple[int, ...] = (5, 10, 20),
    tie_policy: str = "pessimistic",
    stage: str = "test",
) -> dict[str, float]:
    """Most-popular baseline on a datamodule's val or test users, same protocol as models.

    Args:
        datamodule: a set-up ``SequenceDataModule`` (``train_popularity`` [N+1] and
            ``val_dataloader``/``test_dataloader`` yielding inputs/target/history).
        stage: "val" or "test".

    Returns:
        ``{"hr@10": mean, ...}`` over every user of the split.
    """
    item_emb = popularity_embeddings(datamodule.train_popularity)
    metrics = RankingMetrics(ks=ks)
    loader = datamodule.test_dataloader() if stage == "test" else datamodule.val_dataloader()
    for batch in loader:
        user_emb = popularity_user_embeddings(batch["target"].shape[0], item_emb)
        metrics.update(
            full_ranking_ranks(user_emb, item_emb, batch["target"], batch["history"], tie_policy=tie_policy)
        )
    return {k: float(v) for k, v in metrics.compute().items()}
