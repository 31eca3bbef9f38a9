"""Full-ranking ranks vs a brute-force per-user reference, with many ties."""

from __future__ import annotations

import pytest
import torch

from recsys.eval.popularity import (
    item_popularity,
    popularity_embeddings,
    popularity_user_embeddings,
)
from recsys.eval.ranking import TIE_POLICIES, full_ranking_ranks


def brute_force_ranks(user_emb, item_emb, target, history, tie_policy):
    """Per user: score every candidate, drop seen items (never the target), count."""
    ranks = []
    for b in range(user_emb.shape[0]):
        scores = [float(user_emb[b] @ item_emb[i]) for i in range(item_emb.shape[0])]
        t = int(target[b])
        seen = {int(h) for h in history[b]} - {0, t}
        others = [scores[i] for i in range(1, item_emb.shape[0]) if i != t and i not in seen]
        higher = sum(s > scores[t] for s in others)
        ties = sum(s == scores[t] for s in others)
        tie_term = {"pessimistic": ties, "optimistic": 0, "average": ties / 2}[tie_policy]
        ranks.append(1 + higher + tie_term)
    return ranks


def tied_problem(seed, batch=37, num_items=211, dim=4, hist_len=9):
    """Integer-valued embeddings in {-1, 0, 1} (scores tie constantly, exactly), targets
    that often also sit in the history, duplicate and padding entries in histories."""
    g = torch.Generator().manual_seed(seed)
    item_emb = torch.randint(-1, 2, (num_items + 1, dim), generator=g).float()
    item_emb[0] = 100.0  # padding row scores highest: it must never be counted
    user_emb = torch.randint(-1, 2, (batch, dim), generator=g).float()
    target = torch.randint(1, num_items + 1, (batch,), generator=g)
    history = torch.randint(1, num_items + 1, (batch, hist_len), generator=g)
    history[::2, 0] = target[::2]  # target also in history for half of the users
    history[:, 1] = history[:, 2]  # duplicate history entries
    pad = torch.rand(batch, hist_len, generator=g) < 0.3
    history[pad] = 0
    return user_emb, item_emb, target, history


@pytest.mark.parametrize("tie_policy", TIE_POLICIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_with_ties(tie_policy, seed):
    user_emb, item_emb, target, history = tied_problem(seed)
    ranks = full_ranking_ranks(user_emb, item_emb, target, history, tie_policy, chunk_size=50)
    expected = brute_force_ranks(user_emb, item_emb, target, history, tie_policy)
    assert ranks.tolist() == expected
    assert ranks.dtype == (torch.float64 if tie_policy == "average" else torch.long)


def test_tie_policies_are_ordered_and_differ():
    user_emb, item_emb, target, history = tied_problem(3)
    opt, avg, pes = (
        full_ranking_ranks(user_emb, item_emb, target, history, p)
        for p in ("optimistic", "average", "pessimistic")
    )
    assert torch.equal(avg, (opt.double() + pes.double()) / 2)
    assert (opt <= pes).all() and (opt < pes).any()


@pytest.mark.parametrize("tie_policy", TIE_POLICIES)
def test_chunk_size_does_not_change_ranks(tie_policy):
    user_emb, item_emb, target, history = tied_problem(4)
    ref = full_ranking_ranks(user_emb, item_emb, target, history, tie_policy, chunk_size=1)
    for chunk_size in (2, 7, 64, 210, 211, 212, 10_000):
        ranks = full_ranking_ranks(user_emb, item_emb, target, history, tie_policy, chunk_size)
        assert torch.equal(ranks, ref), chunk_size


def test_random_float_scores_match_brute_force():
    g = torch.Generator().manual_seed(5)
    user_emb, item_emb = torch.randn(16, 8, generator=g), torch.randn(301, 8, generator=g)
    target = torch.randint(1, 301, (16,), generator=g)
    history = torch.randint(0, 301, (16, 11), generator=g)
    ranks = full_ranking_ranks(user_emb.double(), item_emb.double(), target, history)
    assert ranks.tolist() == brute_force_ranks(
        user_emb.double(), item_emb.double(), target, history, "pessimistic"
    )


def test_duplicate_of_target_embedding_ties_exactly_in_float32():
    """Items with the target's exact embedding must tie bit-for-bit (same matmul path)."""
    g = torch.Generator().manual_seed(6)
    num_items, batch = 3000, 64
    item_emb = torch.randn(num_items + 1, 64, generator=g)
    user_emb = torch.randn(batch, 64, generator=g)
    target = torch.full((batch,), 7)
    item_emb[[100, 1500, 2999]] = item_emb[7].clone()  # three exact copies, in different chunks
    history = torch.zeros(batch, 0, dtype=torch.long)
    pes = full_ranking_ranks(user_emb, item_emb, target, history, chunk_size=1024)
    opt = full_ranking_ranks(user_emb, item_emb, target, history, "optimistic", chunk_size=1024)
    assert torch.equal(pes - opt, torch.full((batch,), 3))


def test_padding_item_and_history_padding_ignored():
    item_emb = torch.tensor([[9.0], [1.0], [2.0], [3.0]])  # padding row scores highest
    user_emb = torch.ones(2, 1)
    target = torch.tensor([1, 3])
    history = torch.tensor([[0, 0, 0], [0, 3, 0]])  # user 1: target in history, not masked
    assert full_ranking_ranks(user_emb, item_emb, target, history).tolist() == [3, 1]


def test_degenerate_scorer_gets_worst_rank():
    """All scores equal: pessimistic rank = N - |history| (target excluded), HR@10 = 0."""
    num_items, batch = 500, 8
    item_emb = torch.ones(num_items + 1, 4)
    user_emb = torch.ones(batch, 4)
    target = torch.arange(1, batch + 1)
    history = torch.arange(101, 101 + batch * 11).view(batch, 11)
    ranks = full_ranking_ranks(user_emb, item_emb, target, history)
    assert ranks.tolist() == [num_items - 11] * batch
    opt = full_ranking_ranks(user_emb, item_emb, target, history, "optimistic")
    assert opt.tolist() == [1] * batch


def test_popularity_baseline_ranked_by_same_evaluator():
    train = torch.tensor([1, 2, 2, 3, 3, 3, 4, 4, 4, 0])  # 0 = padding, not counted
    pop = item_popularity(train, num_items=5)
    assert pop.tolist() == [0, 1, 2, 3, 3, 0]
    item_emb = popularity_embeddings(pop)
    user_emb = popularity_user_embeddings(3, item_emb)
    assert item_emb.shape == (6, 1) and user_emb.shape == (3, 1)
    target = torch.tensor([3, 2, 5])
    history = torch.tensor([[0, 0], [4, 0], [1, 0]])
    # user 0: item 4 ties with 3 -> pessimistic 2; user 1: item 3 above -> 2;
    # user 2: items 2, 3, 4 above -> 4
    assert full_ranking_ranks(user_emb, item_emb, target, history).tolist() == [2, 2, 4]


def test_rejects_bad_inputs():
    user_emb, item_emb = torch.ones(1, 1), torch.ones(4, 1)
    no_hist = torch.zeros(1, 0, dtype=torch.long)
    with pytest.raises(ValueError, match="tie_policy"):
        full_ranking_ranks(user_emb, item_emb, torch.tensor([1]), no_hist, "random")
    with pytest.raises(ValueError, match="targets"):
        full_ranking_ranks(user_emb, item_emb, torch.tensor([0]), no_hist)
    with pytest.raises(ValueError, match="NaN"):
        full_ranking_ranks(user_emb * float("nan"), item_emb, torch.tensor([1]), no_hist)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("tie_policy", TIE_POLICIES)
def test_cuda_matches_cpu(tie_policy):
    user_emb, item_emb, target, history = tied_problem(7, batch=300, num_items=5000)
    cpu = full_ranking_ranks(user_emb, item_emb, target, history, tie_policy, chunk_size=999)
    gpu = full_ranking_ranks(user_emb, item_emb.cuda(), target, history, tie_policy, chunk_size=999)
    assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 1000])
def test_chunked_topk_equals_a_full_sort(chunk_size):
    from recsys.eval.ranking import chunked_topk

    gen = torch.Generator().manual_seed(0)
    item_emb = torch.randn(26, 4, generator=gen)
    item_emb[5] = item_emb[9]  # an exact tie: the lower id comes first
    user_emb = torch.randn(6, 4, generator=gen)
    excluded = torch.tensor([[1, 2, 0], [0, 0, 0], [9, 9, 3], [25, 0, 0], [5, 0, 0], [4, 6, 8]])
    scores, ids = chunked_topk(user_emb, item_emb, k=10, excluded=excluded, chunk_size=chunk_size)
    for b in range(6):
        full = user_emb[b] @ item_emb.T
        candidates = [i for i in range(1, 26) if i not in excluded[b].tolist()]
        want = sorted(candidates, key=lambda i: (-full[i].item(), i))[:10]
        assert ids[b].tolist() == want
        torch.testing.assert_close(scores[b], full[want])


@pytest.mark.parametrize("tie_policy", ["pessimistic", "optimistic", "average"])
def test_popularity_ranks_equal_the_full_evaluator(tie_policy):
    from recsys.eval.popularity import popularity_ranks

    gen = torch.Generator().manual_seed(1)
    pop = torch.randint(0, 4, (41,), generator=gen)  # many exact ties
    pop[0] = 0
    target = torch.randint(1, 41, (64,), generator=gen)
    history = torch.randint(0, 41, (64, 9), generator=gen)  # duplicates, padding, the target itself
    history[:5, :3] = target[:5, None]
    item_emb = popularity_embeddings(pop)
    want = full_ranking_ranks(popularity_user_embeddings(64, item_emb), item_emb, target, history, tie_policy)
    got = popularity_ranks(pop, target, history, tie_policy)
    assert got.dtype == want.dtype and torch.equal(got, want)


@pytest.mark.parametrize("tie_policy", TIE_POLICIES)
@pytest.mark.parametrize("seed", [0, 1])
def test_mask_target_in_history_is_the_official_rule(tie_policy, seed):
    """mask_target=True: every user whose target repeats a history item gets rank N + 1 (the
    official evaluator masks the whole history, so such a user never hits); every other user
    keeps the rank of the default rule; the popularity baseline follows the same rule."""
    from recsys.eval.popularity import popularity_ranks

    user_emb, item_emb, target, history = tied_problem(seed)
    kept = full_ranking_ranks(user_emb, item_emb, target, history, tie_policy)
    masked = full_ranking_ranks(user_emb, item_emb, target, history, tie_policy, mask_target=True)
    repeated = (history == target[:, None]).any(1)
    assert repeated.any() and (~repeated).any()
    assert torch.equal(masked[~repeated], kept[~repeated])
    assert (masked[repeated] == item_emb.shape[0]).all()  # N + 1
    pop = torch.randint(0, 5, (item_emb.shape[0],), generator=torch.Generator().manual_seed(seed))
    pop_kept = popularity_ranks(pop, target, history, tie_policy)
    pop_masked = popularity_ranks(pop, target, history, tie_policy, mask_target=True)
    assert torch.equal(pop_masked[~repeated], pop_kept[~repeated]) and (pop_masked[repeated] == 212).all()


def test_metrics_agree_with_torchmetrics_retrieval_on_a_dense_case():
    """HR/NDCG/MRR@k from the counting evaluator equal torchmetrics' retrieval metrics, which
    sort every user's full list (positive scores without ties: torchmetrics >= 1.7.4 counts
    scores <= 0 as not retrieved; the history is removed from the lists, as the evaluator
    masks it)."""
    from torchmetrics.retrieval import RetrievalHitRate, RetrievalMRR, RetrievalNormalizedDCG

    from recsys.eval.metrics import metrics_from_ranks

    g = torch.Generator().manual_seed(0)
    users, n, k = 24, 50, 10
    item_emb = torch.rand(n + 1, 8, generator=g, dtype=torch.float64)
    user_emb = torch.rand(users, 8, generator=g, dtype=torch.float64)
    target = torch.randint(1, n + 1, (users,), generator=g)
    history = torch.stack([torch.randperm(n, generator=g)[:6] + 1 for _ in range(users)])
    history[history == target[:, None]] = 0  # no repeated targets here
    ranks = full_ranking_ranks(user_emb, item_emb, target, history)
    ours = {key: value.item() / users for key, value in metrics_from_ranks(ranks, ks=(k,)).items()}

    preds, relevant, indexes = [], [], []
    for u in range(users):
        seen = set(history[u].tolist()) - {0}
        candidates = [i for i in range(1, n + 1) if i not in seen]
        preds.append(item_emb[candidates] @ user_emb[u])
        relevant.append(torch.tensor([i == int(target[u]) for i in candidates]))
        indexes.append(torch.full((len(candidates),), u))
    preds, relevant, indexes = torch.cat(preds), torch.cat(relevant), torch.cat(indexes)
    assert preds.min() > 0 and preds.unique().numel() == preds.numel()
    for name, metric in (("hr", RetrievalHitRate(top_k=k)), ("ndcg", RetrievalNormalizedDCG(top_k=k)),
                         ("mrr", RetrievalMRR(top_k=k))):
        assert ours[f"{name}@{k}"] == pytest.approx(metric(preds, relevant, indexes).item(), abs=1e-6), name
