"""Write a trained run as a self-contained export for top-k serving.

``export_run(run_dir, out_dir)`` restores the run (config, weights; recsys/train/restore.py),
embeds the whole catalogue once with the trained item tower and writes, atomically (a temp
directory renamed into place):

- ``item_embeddings.safetensors``: ``item_embeddings`` float32 [N+1, d] (row 0 = padding, 0);
- ``user_encoder.safetensors``: the user encoder's state dict (tensors only: safetensors
  cannot carry code, so loading an export never unpickles anything);
- ``items.parquet``: ``item_id`` (1..N), ``key`` (the dataset's own item id), ``title``;
- ``export.json``: format version, the user encoder's class and constructor arguments,
  window, N, d, method, dataset, seed, the run's test metrics and where it came from.

Serving then needs neither the data, the caches nor the foundation encoders: the item side
is a fixed table, the user side a ~0.1 M-parameter SASRec (see ``recsys.serving.topk``).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from recsys.train.restore import restore_run

FORMAT_VERSION = 1


def export_run(run_dir: str | Path, out_dir: str | Path, checkpoint: str = "best") -> Path:
    """Export ``run_dir`` (a recsys-train run) to ``out_dir``; returns ``out_dir``."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cfg, dm, module = restore_run(run_dir, checkpoint)
    model = module.model.eval()
    with torch.no_grad():
        items = model.all_item_embeddings().float().contiguous()  # [N+1, d]
    user_encoder = model.user_encoder
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    encoder_args = {k: v for k, v in model_cfg.items() if k != "_target_"}
    results = json.loads((run_dir / "results.json").read_text())
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "user_encoder": {"class": f"{type(user_encoder).__module__}.{type(user_encoder).__name__}",
                         "args": encoder_args},
        "window": int(cfg.data.protocol.window),
        "num_items": int(items.shape[0] - 1),
        "d_model": int(items.shape[1]),
        "method": results["method"],
        "dataset": results["dataset"],
        "seed": results["seed"],
        "test_metrics": results["metrics"]["test"],
        "run_dir": str(run_dir.resolve()),
        "checkpoint": checkpoint,
    }
    tmp = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        save_file({"item_embeddings": items.cpu()}, tmp / "item_embeddings.safetensors")
        state = {k: v.detach().cpu().contiguous() for k, v in user_encoder.state_dict().items()}
        save_file(state, tmp / "user_encoder.safetensors")
        dm.items.select("item_id", "key", "title").write_parquet(tmp / "items.parquet")
        (tmp / "export.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
