"""Losses vs brute-force loops: in-batch softmax (log-pop corrected, history masked), full
softmax (optionally history masked), and the distillation loss over either candidate set
(loss and gradient; α = 0 is exactly the cross-entropy)."""

import math

import pytest
import torch

from recsys.models.loss import (
    distillation_kl,
    distillation_loss,
    full_scores,
    in_batch_scores,
    log_popularity,
    masked_cross_entropy,
)

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


def in_batch_rows(seq):
    """Every predicting position of ``seq`` by loops: ((i, t), its candidates [(j, s, id)],
    the index of its target among them)."""
    b, t1 = seq.shape
    for i in range(b):
        own = set(seq[i].tolist())
        for t in range(t1 - 1):
            if seq[i, t + 1] == 0 or seq[i, t] == 0:
                continue
            cands, label = [], None
            for j in range(b):
                for s in range(t1):
                    c = seq[j, s].item()
                    is_target = (j, s) == (i, t + 1)
                    if c == 0 or (c in own and not is_target):
                        continue
                    if is_target:
                        label = len(cands)
                    cands.append((j, s, c))
            yield (i, t), cands, label


def full_rows(targets, n_items, history):
    """Every non-padding target by loops: ((i, t), its candidate ids, the target's index)."""
    for i in range(targets.shape[0]):
        hist = set(history[i].tolist()) if history is not None else set()
        for t in range(targets.shape[1]):
            y = targets[i, t].item()
            if y == 0:
                continue
            keep = [c for c in range(1, n_items + 1) if c == y or c not in hist]
            yield (i, t), keep, keep.index(y)


def in_batch_logit(states, emb, log_pop):
    """(position, candidate) -> the in-batch logit, popularity corrected."""
    return lambda it, cand: states[it] @ emb[cand[0], cand[1]] - log_pop[cand[2]]


def full_logit(states, all_emb):
    return lambda it, c: states[it] @ all_emb[c]


def brute_ce(rows, logit):
    losses = []
    for it, cands, label in rows:
        logits = torch.stack([logit(it, c) for c in cands])
        losses.append(-torch.log_softmax(logits, 0)[label])
    return torch.stack(losses).mean()


def brute_in_batch(states, seq, emb, log_pop):
    return brute_ce(in_batch_rows(seq), in_batch_logit(states, emb, log_pop))


def brute_full(states, targets, all_emb, history):
    return brute_ce(full_rows(targets, all_emb.shape[0] - 1, history), full_logit(states, all_emb))


def brute_distillation(rows, student, teacher, alpha, tau):
    """Mean over positions of (1-α)·CE + α·τ²·Σ_c p_c (log p_c - log q_c) over the position's
    candidates, p = softmax(teacher/τ), q = softmax(student/τ), summed one candidate at a time."""
    losses = []
    for it, cands, label in rows:
        s = torch.stack([student(it, c) for c in cands])
        t = torch.stack([teacher(it, c) for c in cands])
        log_q, log_p = torch.log_softmax(s / tau, 0), torch.log_softmax(t / tau, 0)
        kl = sum(log_p[k].exp() * (log_p[k] - log_q[k]) for k in range(len(cands)))
        ce = -torch.log_softmax(s, 0)[label]
        losses.append((1 - alpha) * ce + alpha * tau**2 * kl)
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
    got = masked_cross_entropy(in_batch_scores(states, SEQ, emb, log_pop))
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
    loss = masked_cross_entropy(in_batch_scores(states, seq, emb, torch.zeros(10)))
    # user 0: candidates not in {4}: 9 -> 2 logits per position; user 1 position 0 (target 9):
    # own ids {4, 9}: only the target column -> loss 0. Mean of [log 2, log 2, 0].
    torch.testing.assert_close(loss, torch.tensor(2 * math.log(2) / 3))


def test_full_softmax_matches_brute_force():
    torch.manual_seed(1)
    states = torch.randn(5, 5, 6, dtype=torch.float64)
    all_emb = torch.randn(N + 1, 6, dtype=torch.float64)
    targets = SEQ[:, 1:]
    for history in (None, SEQ):
        got = masked_cross_entropy(full_scores(states, targets, all_emb, history))
        torch.testing.assert_close(got, brute_full(states, targets, all_emb, history))


def test_losses_all_padding_batch_is_zero_not_nan():
    seq = torch.zeros(2, 4, dtype=torch.long)
    states = torch.randn(2, 3, 4, requires_grad=True)
    assert masked_cross_entropy(in_batch_scores(states, seq, torch.randn(2, 4, 4), torch.zeros(3))) == 0
    assert masked_cross_entropy(full_scores(states, seq[:, 1:], torch.randn(3, 4))) == 0


def _random(*shape, grad=False):
    return torch.randn(*shape, dtype=torch.float64, requires_grad=grad)


def _student_and_teacher(loss, seed=0):
    """(student leaves, fast student Scores, teacher logits, brute rows, brute student and
    teacher logit functions) for SEQ scored by ``loss`` (``in_batch`` | ``full``)."""
    torch.manual_seed(seed)
    b, t1 = SEQ.shape
    states, t_states = _random(b, t1 - 1, 6, grad=True), _random(b, t1 - 1, 6)
    if loss == "in_batch":
        emb, t_emb = _random(b, t1, 6, grad=True), _random(b, t1, 6)
        log_pop = log_popularity(torch.randint(1, 9, (N + 1,)).double())
        scores = in_batch_scores(states, SEQ, emb, log_pop)
        teacher = in_batch_scores(t_states, SEQ, t_emb, log_pop)
        rows = list(in_batch_rows(SEQ))
        logits = in_batch_logit(states, emb, log_pop), in_batch_logit(t_states, t_emb, log_pop)
    else:
        emb, t_emb = _random(N + 1, 6, grad=True), _random(N + 1, 6)
        scores = full_scores(states, SEQ[:, 1:], emb, SEQ)
        teacher = full_scores(t_states, SEQ[:, 1:], t_emb, SEQ)
        rows = list(full_rows(SEQ[:, 1:], N, SEQ))
        logits = full_logit(states, emb), full_logit(t_states, t_emb)
    # the same candidates for both, by construction: the mask and labels come from the ids
    assert torch.equal(teacher.masked, scores.masked) and torch.equal(teacher.label, scores.label)
    assert scores.masked.any() and not scores.masked.all(1).any()  # masking is exercised
    return (states, emb), scores, teacher.logits, rows, logits


@pytest.mark.parametrize("loss", ["in_batch", "full"])
@pytest.mark.parametrize(("alpha", "tau"), [(0.5, 2.0), (1.0, 0.5), (0.3, 1.0)])
def test_distillation_loss_and_gradient_match_brute_force(loss, alpha, tau):
    leaves, scores, teacher_logits, rows, (student, teacher) = _student_and_teacher(loss)
    got = distillation_loss(scores, teacher_logits, alpha, tau)
    want = brute_distillation(rows, student, teacher, alpha, tau)
    torch.testing.assert_close(got, want)
    for fast, brute in zip(torch.autograd.grad(got, leaves), torch.autograd.grad(want, leaves), strict=True):
        assert torch.isfinite(fast).all()  # masked candidates: no NaN from -inf·0
        torch.testing.assert_close(fast, brute)


@pytest.mark.parametrize("loss", ["in_batch", "full"])
def test_alpha_zero_is_exactly_the_cross_entropy_and_its_gradient(loss):
    leaves, scores, teacher_logits, _, _ = _student_and_teacher(loss, seed=3)
    kd = distillation_loss(scores, teacher_logits, alpha=0.0, tau=2.0)
    ce = masked_cross_entropy(scores)
    assert torch.equal(kd, ce)
    for a, b in zip(torch.autograd.grad(kd, leaves, retain_graph=True), torch.autograd.grad(ce, leaves),
                    strict=True):
        assert torch.equal(a, b)


def test_kl_is_zero_for_the_student_itself_and_positive_otherwise():
    _, scores, teacher_logits, _, _ = _student_and_teacher("in_batch", seed=4)
    assert distillation_kl(scores, scores.logits.detach(), tau=3.0).abs() < 1e-12
    assert distillation_kl(scores, teacher_logits, tau=3.0) > 0
    # a teacher that differs only on masked candidates changes nothing: they are no candidates
    moved = teacher_logits + 100 * scores.masked
    want = distillation_kl(scores, teacher_logits, 3.0)
    torch.testing.assert_close(distillation_kl(scores, moved, 3.0), want)


def test_distillation_needs_the_same_candidates_and_survives_an_empty_batch():
    _, scores, teacher_logits, _, _ = _student_and_teacher("full")
    with pytest.raises(ValueError, match="must score the same candidates"):
        distillation_loss(scores, teacher_logits[:, :-1], 0.5, 2.0)
    seq = torch.zeros(2, 4, dtype=torch.long)
    states = torch.randn(2, 3, 4, requires_grad=True)
    empty = in_batch_scores(states, seq, torch.randn(2, 4, 4), torch.zeros(3))
    assert distillation_loss(empty, empty.logits.detach(), 0.5, 2.0) == 0
