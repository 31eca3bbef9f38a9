"""Benchmark: one cached IISAN training epoch and one full-ranking validation pass.

Uses the real processed dataset (default Amazon Scientific: 12,076 users, 20,314 items, the
reference protocol) and a feature cache of the faithful shape: per modality fp16
[N+1, 7, 768] (BERT-base / ViT-B/16 entries 0,2,...,12). Speed and memory do not depend on
the feature values, so random features stand in where no real cache of that shape exists.
The model is the faithful two-modality IISAN (4.11 M trainable parameters with SASRec),
trained through the same RecommenderModule, Trainer and EfficiencyCallback as recsys-train.

    python experiments/bench_cached_epoch.py                       # CPU or the GPU if any
    python experiments/bench_cached_epoch.py --modalities text --epochs 3
    python experiments/bench_cached_epoch.py --precision 16-mixed  # GPU, as the reference

Prints s/epoch (median over epochs after the first), sequences/s, peak memory and the
validation pass time. Needs `recsys-prep data=scientific` first (or --processed-dir).
"""

from __future__ import annotations

import argparse
import json
import platform

import pytorch_lightning as pl
import torch

from recsys.adapters import build_item_tower
from recsys.cache.features import FeatureStore
from recsys.data.datamodule import SequenceDataModule
from recsys.models.recommender import SequentialRecommender
from recsys.models.sasrec import SASRec
from recsys.train.efficiency import EfficiencyCallback
from recsys.train.module import RecommenderModule

LRS = {"adapter": 1e-4, "text_head": 5e-5, "other": 2e-4}


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processed-dir", default="data/processed/scientific")
    parser.add_argument("--modalities", nargs="+", default=["text", "image"])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--layers", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-batch-size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--chunk-size", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pl.seed_everything(args.seed)
    dm = SequenceDataModule(
        args.processed_dir,
        window=10,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        seed=args.seed,
    )
    dm.setup()
    shape = (dm.num_items + 1, args.layers, args.dim)
    features = {m: torch.randn(shape).mul_(0.5).half() for m in args.modalities}
    for f in features.values():
        f[0] = 0
    store = FeatureStore(features, {m: [args.dim] * args.layers for m in args.modalities})
    streams = "intra_inter" if len(args.modalities) > 1 else "intra"
    tower = build_item_tower("iisan", store, streams=streams, fusion="gated")
    module = RecommenderModule(
        SequentialRecommender(tower, SASRec()), dm.train_popularity, LRS, chunk_size=args.chunk_size
    )
    efficiency = EfficiencyCallback()
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        precision=args.precision,
        logger=False,
        callbacks=[efficiency],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm)
    summary = efficiency.summary()
    report = {
        "device": _device_name(),
        "torch": torch.__version__,
        "dataset": args.processed_dir,
        "users": dm.num_users,
        "items": dm.num_items,
        "modalities": args.modalities,
        "feature_shape": list(shape),
        "batch_size": args.batch_size,
        "precision": args.precision,
        **{
            k: summary[k]
            for k in (
                "trainable_params",
                "s_per_epoch",
                "epoch_seconds",
                "sequences_per_s",
                "peak_train_memory_bytes",
                "memory_kind",
                "val_eval_s",
            )
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
