"""Top-K ranking metrics from target ranks: per-batch sums and a process-safe accumulator.

Leave-one-out metrics follow from the target's 1-based rank ``r`` alone:

* ``hr@k``   = ``1[r <= k]``
* ``ndcg@k`` = ``1[r <= k] / log2(r + 1)`` (one relevant item, so IDCG = 1)
* ``mrr@k``  = ``1[r <= k] / r``

With ``tie_policy="average"`` ranks may be fractional (e.g. ``2.5``); the same formulas are
applied to the fractional rank as is (``hr@k`` uses ``r <= k``), i.e. the metric of the
expected rank, not the expected metric over random tie breaks.

Sums are accumulated in float64 and reduced across processes as sums together with the
count, so the mean is identical on 1 or N processes (per-process means are never averaged).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

METRIC_NAMES: tuple[str, ...] = ("hr", "ndcg", "mrr")


def metrics_from_ranks(ranks: Tensor, ks: Sequence[int] = (5, 10, 20)) -> dict[str, Tensor]:
    """Per-batch SUMS of HR/NDCG/MRR@k over users.

    Args:
        ranks: ``[B]`` 1-based ranks (int or float, e.g. from ``full_ranking_ranks``).
        ks: cut-offs.

    Returns:
        ``{"hr@k", "ndcg@k", "mrr@k" for k in ks}`` -> 0-dim float64 sums on ``ranks``'
        device; divide by ``B`` for means.

    Example:
        >>> out = metrics_from_ranks(torch.tensor([1, 3, 50]), ks=(10,))
        >>> out["hr@10"].item(), out["mrr@10"].item()
        (2.0, 1.3333333333333333)
        >>> round(out["ndcg@10"].item(), 4)  # 1/log2(2) + 1/log2(4)
        1.5
    """
    r = ranks.to(torch.float64)
    zero = torch.zeros_like(r)
    ndcg_all, mrr_all = 1.0 / torch.log2(r + 1.0), 1.0 / r
    out: dict[str, Tensor] = {}
    for k in ks:
        hit = r <= k
        out[f"hr@{k}"] = hit.sum(dtype=torch.float64)
        out[f"ndcg@{k}"] = torch.where(hit, ndcg_all, zero).sum()
        out[f"mrr@{k}"] = torch.where(hit, mrr_all, zero).sum()
    return out


def _state_name(key: str) -> str:
    """Attribute-safe state name for a metric key: ``"hr@10" -> "hr_at_10"``."""
    return key.replace("@", "_at_")


class RankingMetrics(Metric):
    """Accumulates HR/NDCG/MRR@k from ranks; sums and count are summed across processes.

    ``compute()`` returns means ``{f"{prefix}hr@10": ..., ...}`` (float64, 0-dim); NaN
    before any update.

    Example:
        >>> m = RankingMetrics(ks=(10,), prefix="val/")
        >>> m.update(torch.tensor([1, 20]))
        >>> m.update(torch.tensor([2]))
        >>> round(m.compute()["val/hr@10"].item(), 4)
        0.6667
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, ks: Sequence[int] = (5, 10, 20), prefix: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.ks = tuple(ks)
        self.prefix = prefix
        self.keys = [f"{name}@{k}" for k in self.ks for name in METRIC_NAMES]
        for key in self.keys:
            self.add_state(
                _state_name(key), torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum"
            )
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, ranks: Tensor) -> None:
        """Add one batch of ``[B]`` ranks."""
        for key, value in metrics_from_ranks(ranks, self.ks).items():
            name = _state_name(key)
            setattr(self, name, getattr(self, name) + value.to(self.count.device))
        self.count = self.count + ranks.numel()

    def compute(self) -> dict[str, Tensor]:
        """Means over all users seen (on all processes)."""
        return {
            self.prefix + key: getattr(self, _state_name(key)) / self.count for key in self.keys
        }
