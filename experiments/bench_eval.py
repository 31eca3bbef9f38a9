"""Benchmark full-ranking evaluation at the Amazon Scientific size (random embeddings).

Times ``full_ranking_ranks`` over all users in batches, on CPU and (if available) CUDA,
prints users/s and total seconds, and checks the ranks against a naive sort-based
reference (argsort of masked scores, pessimistic ties) on a subset of users.

Example:
    python experiments/bench_eval.py
    python experiments/bench_eval.py --users 2000 --items 5000 --device cpu --chunk-size 4096
"""

from __future__ import annotations

import argparse
import time

import torch

from recsys.eval.metrics import RankingMetrics
from recsys.eval.ranking import full_ranking_ranks


def sort_reference_ranks(user_emb, item_emb, target, history):
    """Pessimistic ranks from sorted masked scores ``[B, N]`` (a different code path)."""
    scores = user_emb @ item_emb[1:].T
    t_score = scores.gather(1, (target - 1).unsqueeze(1))
    seen = torch.zeros_like(scores, dtype=torch.bool)
    seen.scatter_(1, (history - 1).clamp(min=0), history > 0)
    seen.scatter_(1, (target - 1).unsqueeze(1), False)
    ascending = torch.sort(scores.masked_fill(seen, float("-inf")), dim=1).values
    # pessimistic: every candidate scoring >= the target (itself included) is at or above it
    return scores.shape[1] - torch.searchsorted(ascending, t_score, side="left").squeeze(1)


def make_problem(args, generator):
    n, u, d = args.items, args.users, args.dim
    item_emb = torch.randn(n + 1, d, generator=generator)
    user_emb = torch.randn(u, d, generator=generator)
    target = torch.randint(1, n + 1, (u,), generator=generator)
    history = torch.randint(1, n + 1, (u, args.history), generator=generator)
    return user_emb, item_emb, target, history


def run(device, problem, args):
    """Rank all users in batches on ``device``; returns (ranks, seconds)."""
    user_emb, item_emb, target, history = (t.to(device) for t in problem)
    metric = RankingMetrics().to(device)

    def sweep():
        out = []
        for s in range(0, user_emb.shape[0], args.batch_size):
            sl = slice(s, s + args.batch_size)
            ranks = full_ranking_ranks(
                user_emb[sl], item_emb, target[sl], history[sl], args.tie_policy, args.chunk_size
            )
            metric.update(ranks)
            out.append(ranks)
        return torch.cat(out)

    sweep()  # warm-up (allocator, kernels)
    metric.reset()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    ranks = sweep()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    at10 = {k: round(v.item(), 5) for k, v in metric.compute().items() if k.endswith("@10")}
    print(f"  {device.type} metrics on random embeddings: {at10}")
    return ranks.cpu(), seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=12_076)
    p.add_argument("--items", type=int, default=20_314)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--history", type=int, default=11)
    p.add_argument("--batch-size", type=int, default=256, help="users per call")
    p.add_argument("--chunk-size", type=int, default=4096, help="items per matmul")
    p.add_argument("--tie-policy", default="pessimistic")
    p.add_argument("--device", default="all", help="cpu, cuda or all (cpu + cuda if present)")
    p.add_argument("--check-users", type=int, default=512, help="users checked vs sort ref")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    problem = make_problem(args, torch.Generator().manual_seed(args.seed))
    devices = [args.device] if args.device != "all" else ["cpu"]
    if args.device == "all" and torch.cuda.is_available():
        devices.append("cuda")
    print(
        f"{args.users} users x {args.items} items x {args.dim}-d, history {args.history}, "
        f"batch {args.batch_size}, chunk {args.chunk_size}, torch threads "
        f"{torch.get_num_threads()}"
    )

    user_emb, item_emb, target, history = problem
    m = args.check_users
    ref = sort_reference_ranks(user_emb[:m], item_emb, target[:m], history[:m])
    for name in devices:
        device = torch.device(name)
        ranks, seconds = run(device, problem, args)
        agree = torch.equal(ranks[:m], ref) if m and args.tie_policy == "pessimistic" else "n/a"
        print(
            f"{name:>4}: {seconds:.3f} s total, {args.users / seconds:,.0f} users/s, "
            f"matches sort reference on {m} users: {agree}"
        )


if __name__ == "__main__":
    main()
