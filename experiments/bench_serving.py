"""Serving benchmark: every item-table format and faiss index against the exact top-k.

Two catalogues, each scored with user states ``[Q, d]`` computed beforehand (the user encoder
costs the same whatever the retrieval, so only retrieval is timed):

- ``movielens``: a trained MovieLens-100K model (``--run-dir``, or trained first with
  ``recsys-train experiment=sasrec_tuned_movielens`` into ``--work-dir``): its item table
  ``[N+1, 64]`` and its 943 test users' states, each user's history excluded;
- ``synthetic``: ``--items`` items (1,000,000) of the model's width ``--dim`` (64), a mixture
  of ``--clusters`` Gaussian clusters (default one per 1,000 items): ``item = (c + spread *
  e) / sqrt(d)`` with the centre ``c ~ N(0, I)`` of a uniformly drawn cluster and ``e ~ N(0,
  I)``; queries are drawn the same way (users near a genre), no history. ``--clusters 0``
  gives plain Gaussian items and queries (``N(0, I / d)``), the hard case for an index.

Settings, each through ``recsys.serving.retrieval.Retriever``: ``exact`` (float32
``chunked_topk``), ``float16`` and ``int8`` (the table read back from the format, scored
exactly), ``binary`` (Hamming top ``--binary-candidates`` over sign codes, re-ranked with the
int8 table), faiss ``flat``, ``hnsw`` (``ef_search`` swept), ``ivf_flat`` and ``ivf_pq``
(``nprobe`` swept; ``nlist`` = the power of 2 nearest ``sqrt(N)``; IVF-PQ re-ranks
``--pq-candidates`` exactly). Per setting: recall@10 against the exact float32 top-10 (over
``--recall-queries`` queries), queries/s and latency p50 / p99 at batch 1 (``--calls-1``
calls) and batch 256 (``--calls-256`` calls), after ``--warmup`` calls each; the build time
(encoding the format, building the index) and bytes (the format's tensors; the faiss index
apart); on MovieLens also test HR@10 / NDCG@10 with the ranking through the retriever (the
history masked as the run's evaluator does; ``recsys.serving.retrieval.retrieved_ranks``),
beside the exact evaluator's. The report names the settings that reach recall@10 >= 0.95 at
>= 10x the exact path's queries/s at batch 1.

    python experiments/bench_serving.py                          # trains the MovieLens model if needed
    python experiments/bench_serving.py --run-dir outputs/sasrec_tuned_movielens/<time>
    python experiments/bench_serving.py --smoke --out /tmp/bench # tiny catalogue, few queries

Writes ``experiments/results/<machine>/bench_serving.{json,md}`` atomically (``cpu-<n>core``,
or the GPU's name with ``--device cuda``: the torch paths run there, faiss on the CPU);
``--smoke`` writes to ``--out`` (default ``<work-dir>/results``), never to results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from recsys_train_run import train_run
from torch import Tensor

from recsys.atomic_io import write_json_atomic, write_text_atomic
from recsys.eval.metrics import metrics_from_ranks
from recsys.eval.ranking import full_ranking_ranks
from recsys.serving import ann
from recsys.serving.formats import decode, encode, nbytes
from recsys.serving.retrieval import Retriever, recall_at_k, retrieved_ranks

ROOT = Path(__file__).resolve().parents[1]
K = 10
TARGET_RECALL, TARGET_SPEEDUP = 0.95, 10.0


class Catalogue:
    """An item table ``[N+1, d]``, query states ``[Q, d]``, each query's excluded ids (1-D
    tensors; the history) and, for a trained model, each query's test target and the run's
    masking rule."""

    def __init__(self, name: str, table: Tensor, queries: Tensor, histories: list[Tensor] | None = None,
                 targets: Tensor | None = None, mask_target: bool = True) -> None:
        self.name, self.table, self.queries = name, table, queries
        self.histories, self.targets, self.mask_target = histories, targets, mask_target

    def excluded(self, rows: Tensor) -> Tensor | None:
        """The excluded ids ``[len(rows), H]`` of queries ``rows``, 0-padded (None: no history)."""
        if self.histories is None:
            return None
        return torch.nn.utils.rnn.pad_sequence([self.histories[i] for i in rows.tolist()], batch_first=True)


def movielens(run_dir: Path, device: str) -> Catalogue:
    """The trained run's item table and its test users' states, histories and targets."""
    from recsys.train.restore import restore_run

    run = restore_run(run_dir)
    model = run.module.model.eval().to(device)
    run.datamodule.setup("test")
    states, histories, targets = [], [], []
    with torch.no_grad():
        table = model.all_item_embeddings().float()
        for batch in run.datamodule.test_dataloader():
            states.append(model.user_embedding(batch["inputs"].to(device)).float())
            histories += [row[row != 0] for row in batch["history"]]
            targets.append(batch["target"])
    return Catalogue("movielens", table, torch.cat(states), histories, torch.cat(targets),
                     bool(run.config.eval.mask_target_in_history))


def synthetic(items: int, dim: int, clusters: int, spread: float, queries: int, device: str) -> Catalogue:
    """``items`` clustered (or, ``clusters=0``, plain Gaussian) items and ``queries`` queries."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(max(clusters, 1), dim, generator=gen) if clusters else torch.zeros(1, dim)
    scale = spread if clusters else 1.0

    def draw(n: int) -> Tensor:
        pick = torch.randint(0, centres.shape[0], (n,), generator=gen)
        return (centres[pick] + scale * torch.randn(n, dim, generator=gen)) / dim**0.5

    table = draw(items + 1)
    table[0] = 0
    return Catalogue("synthetic", table.to(device), draw(queries).to(device))


def settings(num_items: int, args: argparse.Namespace) -> list[dict]:
    """Every setting: ``name``, ``format`` (of the table), ``index`` spec (or None),
    ``search`` (faiss search parameters swept on one built index) and ``candidates``."""
    nlist = 2 ** max(2, round(0.5 * torch.log2(torch.tensor(float(num_items))).item()))
    probes = sorted({max(1, nlist // div) for div in (128, 64, 32, 16, 8, 4)})
    hnsw = {"kind": "hnsw", "M": args.hnsw_m, "ef_construction": args.ef_construction}
    rows = [{"name": fmt, "format": fmt, "index": None, "search": {}, "candidates": K}
            for fmt in ("float32", "float16", "int8")]
    rows[0]["name"] = "exact"
    rows.append({"name": f"binary+rerank {args.binary_candidates}", "format": "binary", "index": None,
                 "search": {}, "candidates": args.binary_candidates})
    rows.append({"name": "faiss flat", "format": "float32", "index": {"kind": "flat"}, "search": {},
                 "candidates": K})
    rows += [{"name": f"hnsw M={args.hnsw_m} ef_search={ef}", "format": "float32", "index": hnsw,
              "search": {"efSearch": ef}, "candidates": K} for ef in args.ef_search]
    rows += [{"name": f"ivf_flat nlist={nlist} nprobe={p}", "format": "float32",
              "index": {"kind": "ivf_flat", "nlist": nlist}, "search": {"nprobe": p}, "candidates": K}
             for p in probes]
    pq = {"kind": "ivf_pq", "nlist": nlist, "pq_m": args.pq_m, "pq_nbits": 8}
    rows += [{"name": f"ivf_pq nlist={nlist} m={args.pq_m} nprobe={p} +rerank {args.pq_candidates}",
              "format": "float32", "index": pq, "search": {"nprobe": p}, "candidates": args.pq_candidates}
             for p in probes]
    return rows


def timed(topk: Callable[[Tensor, Tensor | None], object], cat: Catalogue, batch: int, calls: int,
          warmup: int) -> dict:
    """Queries/s and latency p50 / p99 (ms) of ``calls`` calls at ``batch`` queries each
    (consecutive queries, wrapping around), after ``warmup`` calls."""
    latencies = []
    for call in range(warmup + calls):
        rows = torch.arange(call * batch, (call + 1) * batch) % cat.queries.shape[0]
        states, excluded = cat.queries[rows], cat.excluded(rows)
        if cat.table.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        topk(states, excluded)
        if cat.table.is_cuda:
            torch.cuda.synchronize()
        latencies.append(time.perf_counter() - start)
    kept = latencies[warmup:]
    quantiles = statistics.quantiles(kept, n=100, method="inclusive") if len(kept) > 1 else kept * 99
    return {"qps": round(batch * len(kept) / sum(kept), 1), "p50_ms": round(1e3 * statistics.median(kept), 3),
            "p99_ms": round(1e3 * quantiles[98], 3), "calls": len(kept)}


def top10(retriever: Retriever, cat: Catalogue, queries: int) -> Tensor:
    """Top-10 ids ``[queries, 10]`` of the first ``queries`` queries, in batches of 256."""
    parts = torch.arange(min(queries, cat.queries.shape[0])).split(256)
    return torch.cat([retriever.topk(cat.queries[part], K, cat.excluded(part))[1].cpu() for part in parts])


def test_metrics(retriever: Retriever | None, cat: Catalogue) -> dict:
    """Test HR@10 / NDCG@10 over all users: through ``retriever``, or (None) by the exact
    evaluator (``full_ranking_ranks``, pessimistic ties)."""
    sums: dict[str, float] = {}
    for part in torch.arange(cat.queries.shape[0]).split(256):
        states, target, history = cat.queries[part], cat.targets[part], cat.excluded(part)
        if retriever is None:
            ranks = full_ranking_ranks(states, cat.table, target, history, mask_target=cat.mask_target)
        else:
            ranks = retrieved_ranks(retriever, states, target, history, K, cat.mask_target)
        for key, value in metrics_from_ranks(ranks.cpu(), ks=(K,)).items():
            sums[key] = sums.get(key, 0.0) + float(value)
    return {f"test_{key}": round(sums[key] / cat.queries.shape[0], 4) for key in (f"hr@{K}", f"ndcg@{K}")}


def bench(cat: Catalogue, args: argparse.Namespace) -> list[dict]:
    """One result row per setting on ``cat``."""
    exact = Retriever(cat.table)
    truth = top10(exact, cat, args.recall_queries)
    rows, built = [], {}
    for setting in settings(cat.table.shape[0] - 1, args):
        start = time.perf_counter()
        tensors = encode(cat.table, setting["format"])
        table = decode(tensors, setting["format"]).to(cat.table.device)
        codes = tensors.get("item_codes")
        build_s = time.perf_counter() - start
        index, index_bytes = None, None
        if setting["index"] is not None:
            key = json.dumps(setting["index"], sort_keys=True)
            if key not in built:  # one build per index; its search parameters are swept
                start = time.perf_counter()
                index = ann.build_index(table, **setting["index"])
                built[key] = (index, time.perf_counter() - start, ann.index_bytes(index))
            index, index_build_s, index_bytes = built[key]
            build_s += index_build_s
            for name, value in setting["search"].items():
                ann.require_faiss().ParameterSpace().set_index_parameter(index, name, value)
        retriever = Retriever(table, None if codes is None else codes.to(table.device), index,
                              setting["candidates"])
        print(f"[bench] {cat.name}: {setting['name']}", flush=True)

        def topk(states: Tensor, excluded: Tensor | None, retriever: Retriever = retriever) -> object:
            return retriever.topk(states, K, excluded)

        row = {"catalogue": cat.name, "setting": setting["name"], "format": setting["format"],
               "index": setting["index"], "search": setting["search"], "candidates": setting["candidates"],
               "build_s": round(build_s, 3),
               "table_bytes": nbytes(tensors), "index_bytes": index_bytes,
               f"recall@{K}": round(recall_at_k(top10(retriever, cat, args.recall_queries), truth), 4),
               "batch_1": timed(topk, cat, 1, args.calls_1, args.warmup),
               "batch_256": timed(topk, cat, 256, args.calls_256, args.warmup)}
        if cat.targets is not None:
            row |= test_metrics(retriever, cat)
        rows.append(row)
    return rows


def meets_target(row: dict, exact: dict) -> bool:
    return (row["index"] is not None and row[f"recall@{K}"] >= TARGET_RECALL
            and row["batch_1"]["qps"] >= TARGET_SPEEDUP * exact["batch_1"]["qps"])


def report(results: dict) -> str:
    """The markdown tables of ``results``."""
    lines = [f"# Serving benchmark ({results['machine']})", "", results["note"], ""]
    for cat in results["catalogues"]:
        rows = [r for r in results["rows"] if r["catalogue"] == cat["name"]]
        exact = rows[0]
        lines += [f"## {cat['name']}: {cat['items']:,} items, d={cat['dim']}, {cat['queries']:,} queries",
                  "", cat["made"], ""]
        evaluator = cat.get("exact_evaluator")
        if evaluator:
            lines += [f"Exact evaluator (full ranking, pessimistic ties): test HR@10 "
                      f"{evaluator[f'test_hr@{K}']}, NDCG@10 {evaluator[f'test_ndcg@{K}']}.", ""]
        head = ["setting", "recall@10", "q/s b1", "p50 / p99 ms b1", "q/s b256", "p50 / p99 ms b256",
                "build s", "table MiB", "index MiB", *(["HR@10", "NDCG@10"] if evaluator else [])]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            b1, b256 = r["batch_1"], r["batch_256"]
            cells = [r["setting"], r[f"recall@{K}"], b1["qps"], f"{b1['p50_ms']} / {b1['p99_ms']}",
                     b256["qps"], f"{b256['p50_ms']} / {b256['p99_ms']}", r["build_s"],
                     f"{r['table_bytes'] / 2**20:.1f}",
                     "-" if r["index_bytes"] is None else f"{r['index_bytes'] / 2**20:.1f}",
                     *([r[f"test_hr@{K}"], r[f"test_ndcg@{K}"]] if evaluator else [])]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
        met = [r["setting"] for r in rows if meets_target(r, exact)]
        lines += ["", f"Recall@10 >= {TARGET_RECALL} at >= {TARGET_SPEEDUP:.0f}x the exact path's q/s at "
                      f"batch 1 ({exact['batch_1']['qps']} q/s): {', '.join(met) if met else 'none'}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, help="a trained MovieLens run (default: trains one)")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "outputs" / "bench_serving")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=None, help="default items / 1000; 0: plain Gaussian")
    parser.add_argument("--spread", type=float, default=1.0, help="within-cluster std / the centres' std")
    parser.add_argument("--recall-queries", type=int, default=1000)
    parser.add_argument("--calls-1", type=int, default=200)
    parser.add_argument("--calls-256", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--binary-candidates", type=int, default=1000)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-construction", type=int, default=128)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--pq-m", type=int, default=16)
    parser.add_argument("--pq-candidates", type=int, default=100)
    parser.add_argument("--device", default="cpu", help="cpu | cuda: where the torch paths run (faiss: CPU)")
    parser.add_argument("--smoke", action="store_true", help="5,000 items, few queries, a tiny MovieLens run")
    parser.add_argument("--out", type=Path, default=None, help="default: experiments/results/<machine>")
    args = parser.parse_args()
    if args.smoke:
        args.items, args.recall_queries, args.calls_1, args.calls_256, args.warmup = 5000, 64, 5, 2, 1
        args.binary_candidates, args.ef_construction, args.ef_search = 200, 40, [32]
    clusters = args.items // 1000 if args.clusters is None else args.clusters

    run_dir = args.run_dir
    if run_dir is None:
        run_dir = args.work_dir / ("movielens_smoke" if args.smoke else "movielens")
        quick = ["trainer.max_epochs=1", "+trainer.limit_train_batches=5"] if args.smoke else []
        train_run("movielens", 0, ["experiment=sasrec_tuned_movielens", f"trainer.accelerator={args.device}",
                                   f"paths.data_dir={args.work_dir / 'data'}", *quick], run_dir)
    queries = max(args.recall_queries, 256)
    cats = [movielens(run_dir, args.device),
            synthetic(args.items, args.dim, clusters, args.spread, queries, args.device)]
    clustered = (f"{clusters} Gaussian clusters, item = (centre + {args.spread} * noise) / sqrt(d), "
                 "queries drawn alike, no history.")
    made = {"movielens": f"Trained model: {run_dir}; queries: its test users' states, history excluded.",
            "synthetic": clustered if clusters else "Plain Gaussian items and queries, no history."}
    rows, described = [], []
    for cat in cats:
        entry = {"name": cat.name, "items": cat.table.shape[0] - 1, "dim": cat.table.shape[1],
                 "queries": cat.queries.shape[0], "made": made[cat.name]}
        if cat.targets is not None:
            entry["exact_evaluator"] = test_metrics(None, cat)
        described.append(entry)
        rows += bench(cat, args)

    faiss = ann.require_faiss()
    threads = f"torch {torch.get_num_threads()} threads, faiss {faiss.omp_get_max_threads()} OpenMP threads"
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {threads}"
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else None
    if gpu:
        machine += f", torch paths on {gpu}"
    note = ("Retrieval only (user states precomputed); top-10; recall against the exact float32 top-10; "
            "q/s = queries / summed call time after warm-up; binary and faiss candidates re-ranked by their "
            "exact scores; build s = encoding the table's format + building the index.")
    results = {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}, "note": note,
               "catalogues": described, "rows": rows}
    text = report(results)
    print(text)
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") if gpu else f"cpu-{os.cpu_count()}core"
    out = args.out or (args.work_dir / "results" if args.smoke else ROOT / "experiments" / "results" / slug)
    write_text_atomic(out / "bench_serving.md", text + "\n")
    write_json_atomic(out / "bench_serving.json", results)
    print(f"[bench] wrote {out / 'bench_serving.json'} and bench_serving.md")


if __name__ == "__main__":
    main()
