"""Counted costs at the faithful scale, on a machine where the faithful FFT step does not fit:
Amazon Scientific, BERT-base text + ViT-B/16 image encoders, batch 32, window 10.

    python experiments/count_costs_at_scale.py                 # the in-loop baselines, iisan, id
    python experiments/count_costs_at_scale.py --methods fft iisan --batch-size 64
    python experiments/count_costs_at_scale.py --amp           # saved activations in bf16
    python experiments/count_costs_at_scale.py --tiny --out /tmp/costs   # smoke run, seconds

Each method is the model ``recsys-train`` builds for it on the data, encoders and batch layout
of ``experiment=iisan_scientific`` (real architectures with random weights,
``pretrained=false``: costs do not depend on weights; the synthetic 224x224 item images of
``bench_methods.py`` stand in for the missing Scientific images), counted by
``recsys.train.cost`` as every run's results.json is:

- batch-independent figures are counted whole: model state (parameters, gradients, Adam's
  moments after a real optimiser step), resident features (the in-loop methods' preprocessed
  item inputs over the whole catalogue; IISAN's cached hidden states at their real shape,
  zeros: the tower's work does not depend on their values), item FLOPs per item and query
  FLOPs (ranking the real catalogue);
- the training step is counted on real tensors on a few small batches (``--probes`` of
  ``--probe-size`` sequences) and its FLOPs and saved activations per sequence are scaled to
  ``--batch-size``. Per sequence they vary only with the batch's padding, token span and
  repeated items; the table gives their spread over the counted batches. Methods cheap enough
  (no encoder in the step) are counted whole at ``--batch-size`` on the same sequences, which
  is their figure and measures the scaling's error (the items a batch repeats, the in-batch
  logits growing with its square). FakeTensorMode
  cannot run these steps whole: their shapes depend on the data (a batch's distinct items,
  the positions that carry a loss, a text batch's token span).

Prints and writes ``costs_at_scale{_amp}.{json,md}`` (default experiments/results/cpu-2core/costs/),
with the FFT : IISAN ratios beside the published 47 GB : 3 GB; ``--update`` recounts the methods
given and keeps the file's other rows.
"""

from __future__ import annotations

import argparse
import gc
import shlex
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from bench_methods import ENCODERS, TINY, synthetic_images
from omegaconf import OmegaConf
from transformers import AutoConfig

from data_prep.prep import prepare
from recsys.adapters import tower_class
from recsys.atomic_io import write_json_atomic, write_text_atomic
from recsys.cache.features import FeatureStore
from recsys.cache.manifest import read_json
from recsys.cli import compose
from recsys.train.builders import build_datamodule, build_item_source, build_module
from recsys.train.cost import (
    feature_bytes,
    item_flops_per_item,
    model_state_bytes,
    query_flops,
    train_step_costs,
)

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["fft", "houlsby", "lora", "bitfit", "iisan_uncached", "iisan", "id"]
PAPER = {"fft": 47e9, "iisan": 3e9}  # published peak GPU memory (fp16 AMP), bytes
GIB = 2**30


def zero_cache(cfg, num_items: int) -> FeatureStore:
    """IISAN's resident cache at its real shape: per modality [N+1, L, width] fp16 zeros, L the
    layer schedule's entries (embeddings + one per layer group), width the encoder's hidden size."""
    entries = int(cfg.layer_schedule.groups) + 1
    features, widths = {}, {}
    for modality in cfg.adapter.modalities:
        encoder = cfg.encoder[modality]
        width = AutoConfig.for_model(encoder.arch, **(encoder.arch_overrides or {})).hidden_size
        features[modality] = torch.zeros(num_items + 1, entries, width, dtype=torch.float16)
        widths[modality] = [width] * entries
    return FeatureStore(features, widths)


def adam_stepped(module) -> torch.optim.Optimizer:
    """The run's optimiser after one step on zero gradients: its state exists, as in training."""
    optimizer = module.configure_optimizers()
    for p in module.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    module.zero_grad(set_to_none=True)
    return optimizer


def count_method(method: str, common: list[str], batch_size: int, probe_size: int, probes: int,
                 amp: bool) -> dict:
    cfg = compose("train", [*common, f"adapter={method}", f"label={method}",
                            f"paths.output_dir={ROOT / 'outputs' / 'count_costs_at_scale' / method}"])
    prepare(OmegaConf.to_container(cfg.data, resolve=True))
    dm = build_datamodule(cfg)
    reads = tower_class(cfg.adapter.name).reads
    source = zero_cache(cfg, dm.num_items) if reads == "cache" else build_item_source(cfg, dm)[0]
    module = build_module(cfg, dm, source)
    optimizer = adam_stepped(module)
    item_emb = torch.zeros(dm.num_items + 1, int(cfg.model.d_model))
    eval_batch = next(iter(dm.test_dataloader()))
    row = {
        "method": method, "kind": {"encoders": "in-loop", "cache": "cached", None: "ids"}[reads],
        "trainable_params": sum(p.numel() for p in module.parameters() if p.requires_grad),
        "model_state_bytes": model_state_bytes(module, optimizer),
        "feature_bytes": feature_bytes(module),
        "item_flops_per_item": item_flops_per_item(module.model, num=16),
        "query_flops": query_flops(module.model, eval_batch, item_emb),
    }
    per_sequence = {"train_flops_per_sequence": [], "activation_bytes_per_sequence": []}
    module.train()
    dm.batch_size = probe_size
    context = torch.autocast("cpu", dtype=torch.bfloat16) if amp else nullcontext()
    for _, batch in zip(range(probes), dm.train_dataloader(), strict=False):
        tic = time.perf_counter()
        with context:
            step = train_step_costs(module, lambda batch=batch: module.loss(batch))
        print(f"  {method}: a batch of {probe_size} in {time.perf_counter() - tic:.1f} s", flush=True)
        size = batch["items"].shape[0]
        per_sequence["train_flops_per_sequence"].append(step["train_flops_per_step"] / size)
        per_sequence["activation_bytes_per_sequence"].append(step["peak_activation_bytes"] / size)
    for key, values in per_sequence.items():
        mean = statistics.mean(values)
        row[key] = mean
        row[f"{key}_spread"] = (max(values) - min(values)) / mean if mean else 0.0
    row["train_flops_per_step"] = row["train_flops_per_sequence"] * batch_size
    row["peak_activation_bytes"] = row["activation_bytes_per_sequence"] * batch_size
    if reads != "encoders" and probes * probe_size == batch_size:
        # cheap enough to count whole: the same sequences (the sampler's permutation is fixed
        # by the seed) as one batch, which checks the scaling
        dm.batch_size = batch_size
        with context:
            whole = train_step_costs(module, lambda: module.loss(next(iter(dm.train_dataloader()))))
        row["scaling_error"] = {k: row[k] / whole[k] - 1 for k in whole}
        row |= whole  # the whole batch's count is the figure; the scaled one only checks scaling
        row["train_flops_per_sequence"] = whole["train_flops_per_step"] / batch_size
        row["activation_bytes_per_sequence"] = whole["peak_activation_bytes"] / batch_size
    row["train_memory_bytes"] = row["model_state_bytes"] + row["peak_activation_bytes"] + row["feature_bytes"]
    row["num_items"] = dm.num_items
    return row


def table(rows: list[dict], batch_size: int) -> str:
    head = ["method", "kind", "trainable", "model state GiB", f"activations GiB (b{batch_size})",
            "features GiB", "train memory GiB", "train GFLOPs/seq", "item GFLOPs/item", "query MFLOPs",
            "spread/seq (FLOPs, act.)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], r["kind"], f"{r['trainable_params'] / 1e6:.2f}M",
                 f"{r['model_state_bytes'] / GIB:.2f}", f"{r['peak_activation_bytes'] / GIB:.2f}",
                 f"{r['feature_bytes'] / GIB:.2f}", f"{r['train_memory_bytes'] / GIB:.2f}",
                 f"{r['train_flops_per_sequence'] / 1e9:.1f}", f"{r['item_flops_per_item'] / 1e9:.2f}",
                 f"{r['query_flops'] / 1e6:.2f}",
                 f"{r['train_flops_per_sequence_spread']:.1%}, "
                 f"{r['activation_bytes_per_sequence_spread']:.1%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(rows: list[dict]) -> str:
    by = {r["method"]: r for r in rows}
    if not {"fft", "iisan"} <= set(by):
        return ""
    fft, iisan = by["fft"], by["iisan"]
    mem = fft["train_memory_bytes"] / iisan["train_memory_bytes"]
    no_features = ((fft["train_memory_bytes"] - fft["feature_bytes"])
                   / (iisan["train_memory_bytes"] - iisan["feature_bytes"]))
    flops = fft["train_flops_per_sequence"] / iisan["train_flops_per_sequence"]
    paper = PAPER["fft"] / PAPER["iisan"]
    return (f"FFT : IISAN, counted: training memory {mem:.1f}x ({no_features:.1f}x without the resident "
            f"features), training FLOPs per sequence {flops:.0f}x. Published peak GPU memory: "
            f"{PAPER['fft'] / 1e9:.0f} GB : {PAPER['iisan'] / 1e9:.0f} GB = {paper:.1f}x.")


def scaling_check(rows: list[dict]) -> str:
    """How far the probe-scaled figures are from counting one whole batch of the same
    sequences, for the methods cheap enough to count whole."""
    checked = [f"{r['method']}: " + ", ".join(f"{k} {v:+.1%}" for k, v in r["scaling_error"].items())
               for r in rows if r.get("scaling_error")]
    if not checked:
        return ""
    return "Scaled from the probes, against one whole batch of the same sequences: " + "; ".join(checked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS, metavar="METHOD")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--probe-size", type=int, default=4, help="sequences per counted batch")
    parser.add_argument("--probes", type=int, default=8, help="counted batches per method")
    parser.add_argument("--amp", action="store_true", help="count the step under bf16 autocast")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke mode: bench_methods.py's tiny synthetic data and 6 x 64 encoders")
    parser.add_argument("--update", action="store_true",
                        help="keep the rows of --out's earlier file for the methods not counted now")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "bench_methods")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "cpu-2core" / "costs")
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    if args.tiny:
        common = [*ENCODERS, *TINY, f"paths.data_dir={data_dir}"]
    else:
        raw = compose("train", ["data=scientific", f"paths.data_dir={data_dir}"]).data.raw
        images = synthetic_images(raw.items_file, data_dir / "bench_images")
        common = ["data=scientific", f"paths.data_dir={data_dir}", f"data.raw.images_dir={images}", *ENCODERS]
    precision = "bf16 autocast" if args.amp else "fp32"
    stem = "costs_at_scale_amp" if args.amp else "costs_at_scale"
    earlier = read_json(args.out / f"{stem}.json") if args.update else None
    rows = {r["method"]: r for r in (earlier or {}).get("methods", [])}
    setting = "tiny synthetic data, 6 x 64 encoders" if args.tiny else "Scientific, BERT-base + ViT-B/16"
    header = (f"# Counted costs at scale: {setting}, batch {args.batch_size}, {precision}\n\n"
              f"`{shlex.join(['python', *sys.argv])}` ({time.strftime('%Y-%m-%d %H:%M')}; counted, so any "
              f"machine gives these figures). Training step counted on {args.probes} batches of "
              f"{args.probe_size} sequences, scaled per sequence (spread: (max - min) / mean over them); "
              f"train memory = model state + activations + features.\n\n")
    for method in args.methods:
        print(f"[costs] {method} ...", flush=True)
        rows[method] = count_method(method, common, args.batch_size, args.probe_size, args.probes, args.amp)
        gc.collect()  # the method's model and inputs
        ordered = sorted(rows.values(), key=lambda r: METHODS.index(r["method"]))
        parts = [table(ordered, args.batch_size), scaling_check(ordered), ratios(ordered)]
        text = header + "\n\n".join(part for part in parts if part) + "\n"
        # after every method, so a run stopped half way keeps what it counted (--update goes on)
        write_json_atomic(args.out / f"{stem}.json", {"batch_size": args.batch_size, "precision": precision,
                                                      "probe_size": args.probe_size, "probes": args.probes,
                                                      "methods": ordered})
        write_text_atomic(args.out / f"{stem}.md", text)
    print("\n" + text)

if __name__ == "__main__":
    main()
