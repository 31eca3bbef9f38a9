"""metrics_from_ranks vs hand-computed values; RankingMetrics accumulation and reduction."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.utilities.data import dim_zero_sum

from recsys.eval.metrics import RankingMetrics, metrics_from_ranks


def test_metrics_from_ranks_hand_computed():
    out = metrics_from_ranks(torch.tensor([1, 2, 5, 6, 10, 11, 100]), ks=(5, 10))
    assert set(out) == {"hr@5", "ndcg@5", "mrr@5", "hr@10", "ndcg@10", "mrr@10"}
    assert all(v.dtype == torch.float64 and v.dim() == 0 for v in out.values())
    assert out["hr@5"].item() == 3.0
    assert out["hr@10"].item() == 5.0
    assert out["mrr@5"].item() == pytest.approx(1 + 1 / 2 + 1 / 5)
    assert out["mrr@10"].item() == pytest.approx(1 + 1 / 2 + 1 / 5 + 1 / 6 + 1 / 10)
    ndcg5 = 1 + 1 / math.log2(3) + 1 / math.log2(6)
    assert out["ndcg@5"].item() == pytest.approx(ndcg5)
    assert out["ndcg@10"].item() == pytest.approx(ndcg5 + 1 / math.log2(7) + 1 / math.log2(11))


def test_fractional_average_ranks_use_formula_as_is():
    out = metrics_from_ranks(torch.tensor([1.5, 10.5], dtype=torch.float64), ks=(10,))
    assert out["hr@10"].item() == 1.0
    assert out["mrr@10"].item() == pytest.approx(1 / 1.5)
    assert out["ndcg@10"].item() == pytest.approx(1 / math.log2(2.5))


def test_default_ks_and_empty_batch():
    out = metrics_from_ranks(torch.zeros(0, dtype=torch.long))
    assert sorted(out) == sorted(f"{m}@{k}" for m in ("hr", "ndcg", "mrr") for k in (5, 10, 20))
    assert all(v.item() == 0.0 for v in out.values())


def test_ranking_metrics_accumulation_equals_one_update():
    g = torch.Generator().manual_seed(0)
    ranks = torch.randint(1, 40, (1001,), generator=g)
    one, many = RankingMetrics(), RankingMetrics()
    one.update(ranks)
    for part in torch.split(ranks, [1, 300, 17, 683]):  # uneven shards
        many.update(part)
    a, b = one.compute(), many.compute()
    assert set(a) == set(b) and "hr@10" in a
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0, atol=1e-12), key
    sums = metrics_from_ranks(ranks)
    assert a["ndcg@20"].item() == pytest.approx(sums["ndcg@20"].item() / 1001)


def test_ranking_metrics_states_are_sums_reduced_by_sum():
    m = RankingMetrics(ks=(10,), prefix="test/")
    assert set(m._reductions.values()) == {dim_zero_sum}
    m.update(torch.tensor([1, 20]))
    m.update(torch.tensor([2]))
    assert m.count.dtype == torch.float64 and m.count.item() == 3
    # what a distributed sum of two processes' states gives: totals add, means do not average
    other = RankingMetrics(ks=(10,), prefix="test/")
    other.update(torch.tensor([50] * 7))
    m.merge_state(other)
    assert m.compute()["test/hr@10"].item() == pytest.approx(2 / 10)
    m.reset()
    assert m.count.item() == 0
