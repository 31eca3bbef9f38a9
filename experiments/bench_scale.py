"""Benchmark: a million-item catalogue through every stage, with time and peak memory each.

Stages, each run as its own process through the real entry points, so every peak RSS is
that stage's own (``os.wait4``):

1. ``prep``: ``recsys-prep data=synthetic`` with ``--items`` items and ``--users`` users
   (lengths 5..30, about 17.5 interactions per user: 600k users -> ~10.5 M interactions),
   titles only.
2. ``cache``: ``recsys-cache`` with a BERT-architecture text encoder (2 layers x 128, random
   weights: the benchmark is about the cache, not the encoder; MiniLM would take about an
   hour on 2 cores), written in chunks into a memory-mapped fp16 [N+1, 3, 128] file.
3. ``train``: ``recsys-train`` IISAN (text stream) reading the cache memory-mapped
   (``cache.residency=host``) for ``--train-steps`` steps; its validation and test passes
   embed all N items and rank ``--eval-batches`` x 512 users against all of them
   (chunked, exact ranks).
4. ``export``: ``recsys-export`` of that run, then ``topk``: exact top-10 over the N items
   for 4096 users with ``chunked_topk`` and for one history with the serving code.

    python experiments/bench_scale.py                  # ~1M items with interactions, ~10.5M interactions
    python experiments/bench_scale.py --items 20000 --users 12000 --train-steps 20   # smoke run

Prints one row per stage (wall time, peak RSS, what it did) and writes
``experiments/results/<machine>/bench_scale.{json,md}`` (``cpu-2core``, or the GPU's name:
with a GPU, training, ranking and top-k run on it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from recsys.atomic_io import write_json_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENCODER = [
    "encoder/text=bert_base",
    "encoder/image=none",
    "encoder.text.name=bert_2x128",
    "encoder.text.pretrained=false",
    "+encoder.text.arch_overrides={num_hidden_layers:2,hidden_size:128,num_attention_heads:2,"
    "intermediate_size:512}",
    "encoder.text.batch_size=1024",
    "encoder.text.max_length=16",
]


def _stage(name: str, cmd: list[str], log_dir: Path) -> dict:
    """Run ``cmd`` as a child process; its wall time and own peak RSS (GiB)."""
    log = log_dir / f"{name}.log"
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env=os.environ | {"WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"})
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage {name} failed, see {log}:\n{log.read_text()[-3000:]}")
    return {"stage": name, "seconds": round(seconds, 1), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2)}


def _topk(export_dir: str, users: int) -> None:
    """Stage ``topk`` (runs in its own process): exact top-10 for ``users`` random user
    states and for one history through the serving code; prints a JSON line."""
    import torch

    from recsys.eval.ranking import chunked_topk
    from recsys.serving.topk import ExportedRecommender

    rec = ExportedRecommender.load(export_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    table = rec.item_embeddings.to(device)
    states = torch.randn(users, table.shape[1], generator=torch.Generator().manual_seed(0)).to(device)
    start = time.perf_counter()
    for chunk in states.split(512):
        chunked_topk(chunk, table, k=10)
    if device == "cuda":
        torch.cuda.synchronize()
    batch_s = time.perf_counter() - start
    start = time.perf_counter()
    rec.recommend(rec.keys[:10], k=10)
    one_s = time.perf_counter() - start
    print(json.dumps({"users": users, "batch_topk_s": batch_s, "one_history_s": one_s, "device": device}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_050_000)  # ~1.0 M have interactions
    parser.add_argument("--users", type=int, default=600_000)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--eval-batches", type=int, default=8)
    parser.add_argument("--topk-users", type=int, default=4096)
    parser.add_argument("--accelerator", default="auto", help="training/evaluation: auto | cpu | gpu")
    parser.add_argument("--data-dir", default=str(ROOT / "data" / "scale"))
    parser.add_argument("--out", default=None, help="results dir (default experiments/results/<machine>)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # internal: run one in-process stage
    parser.add_argument("--export-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage == "topk":
        _topk(args.export_dir, args.topk_users)
        return

    data_dir = Path(args.data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)  # every stage measured from scratch
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    run_dir = data_dir / "run"
    common = [
        f"paths.data_dir={data_dir}",
        "data=synthetic",
        f"data.raw.n_items={args.items}",
        f"data.raw.n_users={args.users}",
        f"data.raw.n_clusters={max(args.items // 200, 10)}",
        "data.raw.modalities=[text]",
    ]
    rows = [_stage("prep", [str(BIN / "recsys-prep"), *common], log_dir)]
    stats = json.loads((data_dir / "processed" / "synthetic" / "stats.json").read_text())
    rows[-1]["did"] = (f"{stats['items']:,} items, {stats['users']:,} users, "
                       f"{stats['interactions']:,} interactions")

    rows.append(_stage("cache", [str(BIN / "recsys-cache"), *common, *ENCODER, "cache.progress_bar=false"],
                       log_dir))
    manifest = json.loads((data_dir / "cache" / "synthetic" / "bert_2x128.json").read_text())
    size = (data_dir / "cache" / "synthetic" / "bert_2x128.npy").stat().st_size
    rows[-1]["did"] = (f"fp16 {manifest['shape']} memmap, {size / 2**30:.2f} GiB, "
                       f"{manifest['build']['items_per_second']} items/s")

    train = [
        str(BIN / "recsys-train"), *common, *ENCODER, "adapter=iisan", "adapter.streams=intra",
        "adapter.layer_groups=null", "cache.residency=host", "trainer.max_epochs=1",
        f"trainer.accelerator={args.accelerator}", f"+trainer.limit_train_batches={args.train_steps}",
        f"+trainer.limit_val_batches={args.eval_batches}", f"+trainer.limit_test_batches={args.eval_batches}",
        "data.eval_batch_size=512", "logger=none", "~callbacks.early_stopping", f"hydra.run.dir={run_dir}",
    ]
    rows.append(_stage("train", train, log_dir))
    eff = json.loads((run_dir / "results.json").read_text())["efficiency"]
    rows[-1]["did"] = (
        f"{args.train_steps} steps at batch 64: {eff['s_per_step']:.3f} s/step, train-phase peak RSS "
        f"{eff['peak_train_memory_bytes'] / 2**30:.2f} GiB; val pass (all {stats['items']:,} items embedded "
        f"in {eff['item_tower_s']:.1f} s + {args.eval_batches * 512} users ranked) {eff['val_eval_s']:.1f} s"
    )

    export_dir = data_dir / "export"
    rows.append(_stage("export", [str(BIN / "recsys-export"), f"run_dir={run_dir}", f"out_dir={export_dir}"],
                       log_dir))
    rows.append(_stage("topk", [sys.executable, __file__, "--stage", "topk", f"--export-dir={export_dir}",
                                f"--topk-users={args.topk_users}"], log_dir))
    topk = json.loads((log_dir / "topk.log").read_text().strip().splitlines()[-1])
    rows[-1]["did"] = (f"exact top-10 of {stats['items']:,} items on {topk['device']}: "
                       f"{topk['users']} users in "
                       f"{topk['batch_topk_s']:.1f} s; one history (serving) in "
                       f"{topk['one_history_s'] * 1e3:.0f} ms")

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    if topk["device"] == "cuda":
        import torch

        machine += f", {torch.cuda.get_device_name(0)}"
    lines = [f"# Scale benchmark: {stats['items']:,} items ({machine})", "",
             "| stage | wall s | peak RSS GiB | what |", "|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['seconds']} | {r['peak_rss_gib']} | {r.get('did', '')} |" for r in rows]
    report = "\n".join(lines)
    print(report)
    gpu = machine.rsplit(", ", 1)[1] if topk["device"] == "cuda" else None
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()) if gpu else f"cpu-{os.cpu_count()}core"
    out = Path(args.out) if args.out else ROOT / "experiments" / "results" / slug
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "bench_scale.md", report + "\n")
    write_json_atomic(out / "bench_scale.json", {"machine": machine, "stages": rows})


if __name__ == "__main__":
    main()
