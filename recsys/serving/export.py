"""Write a trained run as a self-contained export for top-k serving.

``export_run(run_dir, out_dir)`` restores the run (config, weights; recsys/train/restore.py),
embeds the whole catalogue once with the trained item tower and writes, atomically (a temp
directory renamed into place; ``write_export``):

- ``item_embeddings.safetensors``: the item table [N+1, d] (row 0 = padding, 0) in the
  chosen format (``embeddings``; ``recsys.serving.formats``): float32 ``item_embeddings``
  (default), float16, int8 (``item_embeddings`` int8 + ``item_scales`` float32 [N+1], one
  scale per row) or binary (the int8 tensors + ``item_codes`` int64 sign bits [N+1, ceil(d/64)]:
  Hamming candidates, re-ranked exactly with the int8 table);
- ``item_index.faiss`` (only with ``index``, e.g. ``{"kind": "hnsw", "M": 32}``;
  ``recsys.serving.ann``): a faiss index of items 1..N built on the table as it is read back
  (dequantised), so the index and the re-rank score the same vectors;
- ``user_encoder.safetensors``: the user encoder's state dict (tensors only: safetensors
  cannot carry code, so loading an export never unpickles anything);
- ``items.parquet``: ``item_id`` (1..N), ``key`` (the dataset's own item id), ``title``;
- ``export.json``: format version, the user encoder's registry name and options, window, N,
  d, ``embeddings`` (the format), ``index`` (null, or its kind, options, build seconds and
  bytes), ``candidates`` (re-ranked per query on the binary and index paths), ``bytes`` of
  the table's tensors, method, dataset, seed, the run's test metrics and where it came from.

Serving then needs neither the data, the caches nor the foundation encoders: the item side
is a fixed table, the user side a ~0.1 M-parameter SASRec (see ``recsys.serving.topk``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import polars as pl
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from recsys.atomic_io import atomic_path
from recsys.cache.file_fingerprint import file_sha256
from recsys.serving import ann
from recsys.serving.formats import decode, encode, nbytes
from recsys.serving.topk import FORMAT_VERSION, INDEX_FILE, TABLE_FILE


def write_export(
    out_dir: str | Path,
    items: torch.Tensor,
    user_encoder: torch.nn.Module,
    catalogue: pl.DataFrame,
    meta: dict[str, Any],
    embeddings: str = "float32",
    index: dict[str, Any] | None = None,
    candidates: int = 100,
) -> Path:
    """Write an export of ``items`` float [N+1, d], ``user_encoder`` (a registered user
    encoder, its registry name and options in ``meta["user_encoder"]``) and ``catalogue``
    (``item_id``, ``key``, ``title``) to ``out_dir``, atomically; ``meta`` (window and what
    the run was) joins the layout's own entries in export.json. Returns ``out_dir``."""
    out_dir = Path(out_dir)
    if embeddings == "binary" and index is not None:
        raise ValueError("a binary export generates its candidates by Hamming distance: give it no "
                         "index, or index a float32 / float16 / int8 export")
    tensors = encode(items, embeddings)
    built = None
    if index is not None:
        start = time.perf_counter()
        built = ann.build_index(decode(tensors, embeddings), **index)
        index = {**index, "build_s": round(time.perf_counter() - start, 3), "bytes": ann.index_bytes(built)}
    meta = meta | {
        "format_version": FORMAT_VERSION,
        "num_items": int(items.shape[0] - 1),
        "d_model": int(items.shape[1]),
        "embeddings": embeddings,
        "bytes": nbytes(tensors),
        "index": index,
        "candidates": int(candidates),
    }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        save_file(tensors, tmp / TABLE_FILE)
        if built is not None:
            ann.save_index(built, tmp / INDEX_FILE)
        state = {k: v.detach().cpu().contiguous() for k, v in user_encoder.state_dict().items()}
        save_file(state, tmp / "user_encoder.safetensors")
        catalogue.select("item_id", "key", "title").write_parquet(tmp / "items.parquet")
        (tmp / "export.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return out_dir


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    checkpoint: str = "best",
    on_changed_inputs: str = "refuse",
    embeddings: str = "float32",
    index: dict[str, Any] | None = None,
    candidates: int = 100,
) -> Path:
    """Export ``run_dir`` (a recsys-train run) to ``out_dir`` (see ``write_export``); returns
    ``out_dir``. The checkpoint and its inputs are checked as
    ``recsys.train.restore.restore_run`` does."""
    from recsys.train.restore import restore_run  # the training stack: only to restore a run

    run_dir = Path(run_dir)
    run = restore_run(run_dir, checkpoint, on_changed_inputs=on_changed_inputs)
    cfg, dm, module, results = run.config, run.datamodule, run.module, run.results or {}
    model = module.model.eval()
    with torch.no_grad():
        items = model.all_item_embeddings().float().contiguous()  # [N+1, d]
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    meta: dict[str, Any] = {
        "user_encoder": {"name": model_cfg.pop("name"), "options": model_cfg},
        "window": int(cfg.data.protocol.window),
        "method": cfg.label,
        "dataset": cfg.data.name,
        "seed": int(cfg.seed),
        "status": results.get("status"),  # None: no results.json (a killed run)
        "test_metrics": (results.get("metrics") or {}).get("test"),
        "run_dir": str(run_dir.resolve()),
        "checkpoint": {"file": str(run.checkpoint), "sha256": file_sha256(run.checkpoint)},
        "changed_inputs": run.changed_inputs,
    }
    return write_export(out_dir, items, model.user_encoder, dm.items, meta, embeddings, index, candidates)
