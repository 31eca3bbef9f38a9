"""Losses vs brute-force loops: in-batch softmax (log-pop corrected, history masked) and
full softmax (optionally history masked)."""

import math

import torch

from recsys.models.loss import full_softmax_loss, in_batch_softmax_loss, log_popularity

# left-padded; repeats inside a user (row 1: 4 twice), across users (2, 5), all-pad row 3
SEQ = torch.tensor(
    [
        [0, 0, 2, 5, 3, 6],
        [4, 1, 4, 2, 7, 4],
        [0, 0, 0, 0, 5, 2],
        [0, 0, 0, 0, 0, 0],
        [0, 1, 3, 3, 8, 5],
    ]
)
N = 8


def brute_in_batch(states, seq, emb, log_pop):
    b, t1 = seq.shape
    losses = []
    for i in range(b):
        own = set(seq[i].tolist())
        for t in range(t1 - 1):
            if seq[i, t + 1] == 0 or seq[i, t] == 0:
                continue
            logits, label = [], None
            for j in range(b):
                for s in range(t1):
                    c = seq[j, s].item()
                    is_target = (j, s) == (i, t + 1)
                    if c == 0 or (c in own and not is_target):
                        continue
                    if is_target:
                        label = len(logits)
                    logits.append(states[i, t] @ emb[j, s] - log_pop[c])
            losses.append(-torch.log_softmax(torch.stack(logits), 0)[label])
    return torch.stack(losses).mean()


def brute_full(states, targets, all_emb, history):
    losses = []
    for i in range(targets.shape[0]):
        hist = set(history[i].tolist()) if history is not None else set()
        for t in range(targets.shape[1]):
            y = targets[i, t].item()
            if y == 0:
                continue
            keep = [c for c in range(1, all_emb.shape[0]) if c == y or c not in hist]
            logits = torch.stack([states[i, t] @ all_emb[c] for c in keep])
            losses.append(-torch.log_softmax(logits, 0)[keep.index(y)])
    return torch.stack(losses).mean()


def test_log_popularity_finite():
    lp = log_popularity(torch.tensor([0.0, 1.0, 4.0, 0.0]))
    assert torch.isfinite(lp).all() and math.isclose(lp[2].item(), math.log(4), rel_tol=1e-6)


def test_in_batch_loss_matches_brute_force():
    torch.manual_seed(0)
    b, t1 = SEQ.shape
    states = torch.randn(b, t1 - 1, 6, dtype=torch.float64, requires_grad=True)
    emb = torch.randn(b, t1, 6, dtype=torch.float64, requires_grad=True)
    log_pop = log_popularity(torch.randint(1, 9, (N + 1,)).double())
    got = in_batch_softmax_loss(states, SEQ, emb, log_pop)
    want = brute_in_batch(states, SEQ, emb, log_pop)
    torch.testing.assert_close(got, want)
    g_got = torch.autograd.grad(got, (states, emb))
    g_want = torch.autograd.grad(want, (states, emb))
    for a, c in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, c)
        assert torch.isfinite(a).all()


def test_in_batch_mask_keeps_only_the_exact_target_column():
    # user 0's target 4 also sits at other columns of user 0 and of user 1: only the exact
    # column survives, so with all scores equal the loss is log(#unmasked candidates).
    seq = torch.tensor([[4, 4, 4], [4, 9, 0]])
    states = torch.zeros(2, 2, 3)
    emb = torch.zeros(2, 3, 3)
    loss = in_batch_softmax_loss(states, seq, emb, torch.zeros(10))
    # user 0: candidates not in {4}: 9 -> 2 logits per position; user 1 position 0 (target 9):
    # own ids {4, 9}: only the target column -> loss 0. Mean of [log 2, log 2, 0].
    torch.testing.assert_close(loss, torch.tensor(2 * math.log(2) / 3))


def test_full_softmax_matches_brute_force():
    torch.manual_seed(1)
    states = torch.randn(5, 5, 6, dtype=torch.float64)
    all_emb = torch.randn(N + 1, 6, dtype=torch.float64)
    targets = SEQ[:, 1:]
    for history in (None, SEQ):
        got = full_softmax_loss(states, targets, all_emb, history)
        torch.testing.assert_close(got, brute_full(states, targets, all_emb, history))


def test_losses_all_padding_batch_is_zero_not_nan():
    seq = torch.zeros(2, 4, dtype=torch.long)
    states = torch.randn(2, 3, 4, requires_grad=True)
    assert in_batch_softmax_loss(states, seq, torch.randn(2, 4, 4), torch.zeros(3)) == 0
    assert full_softmax_loss(states, seq[:, 1:], torch.randn(3, 4)) == 0
