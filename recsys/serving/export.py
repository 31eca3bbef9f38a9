"""Write a trained run as a self-contained export for top-k serving.

``export_run(run_dir, out_dir)`` restores the run (config, weights; recsys/train/restore.py),
embeds the whole catalogue once with the trained item tower and writes, atomically (a temp
directory renamed into place):

- ``item_embeddings.safetensors``: ``item_embeddings`` float32 [N+1, d] (row 0 = padding, 0);
- ``user_encoder.safetensors``: the user encoder's state dict (tensors only: safetensors
  cannot carry code, so loading an export never unpickles anything);
- ``items.parquet``: ``item_id`` (1..N), ``key`` (the dataset's own item id), ``title``;
- ``export.json``: format version, the user encoder's registry name and options, window, N,
  d, method, dataset, seed, the run's test metrics and where it came from.

Serving then needs neither the data, the caches nor the foundation encoders: the item side
is a fixed table, the user side a ~0.1 M-parameter SASRec (see ``recsys.serving.topk``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from recsys.atomic_io import atomic_path
from recsys.cache.file_fingerprint import file_sha256
from recsys.serving.topk import FORMAT_VERSION
from recsys.train.restore import restore_run


def export_run(
    run_dir: str | Path, out_dir: str | Path, checkpoint: str = "best", on_changed_inputs: str = "refuse"
) -> Path:
    """Export ``run_dir`` (a recsys-train run) to ``out_dir``; returns ``out_dir``. The
    checkpoint and its inputs are checked as ``recsys.train.restore.restore_run`` does."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    run = restore_run(run_dir, checkpoint, on_changed_inputs=on_changed_inputs)
    cfg, dm, module, results = run.config, run.datamodule, run.module, run.results or {}
    model = module.model.eval()
    with torch.no_grad():
        items = model.all_item_embeddings().float().contiguous()  # [N+1, d]
    user_encoder = model.user_encoder
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "user_encoder": {"name": model_cfg.pop("name"), "options": model_cfg},
        "window": int(cfg.data.protocol.window),
        "num_items": int(items.shape[0] - 1),
        "d_model": int(items.shape[1]),
        "method": cfg.label,
        "dataset": cfg.data.name,
        "seed": int(cfg.seed),
        "status": results.get("status"),  # None: no results.json (a killed run)
        "test_metrics": (results.get("metrics") or {}).get("test"),
        "run_dir": str(run_dir.resolve()),
        "checkpoint": {"file": str(run.checkpoint), "sha256": file_sha256(run.checkpoint)},
        "changed_inputs": run.changed_inputs,
    }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        save_file({"item_embeddings": items.cpu()}, tmp / "item_embeddings.safetensors")
        state = {k: v.detach().cpu().contiguous() for k, v in user_encoder.state_dict().items()}
        save_file(state, tmp / "user_encoder.safetensors")
        dm.items.select("item_id", "key", "title").write_parquet(tmp / "items.parquet")
        (tmp / "export.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    return out_dir
