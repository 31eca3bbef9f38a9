"""recsys-eval: re-evaluate a finished training run from its directory.

    recsys-eval run_dir=outputs/train/2026-11-23_12-00-00
    recsys-eval run_dir=... checkpoint=last stages=[test] eval.tie_policy=optimistic
    recsys-eval run_dir=... eval.mask_target_in_history=false   # the other masking protocol
    recsys-eval run_dir=... 'eval.ann={kind: hnsw}'      # + ranked through an HNSW index: test/ann_hr@10
    recsys-eval run_dir=... devices=4 strategy=ddp     # users sharded over 4 GPUs
    recsys-eval run_dir=... cache_dtype=int8           # its float16 features served as int8

Restores exactly the run's checkpoint (the file results.json records, verified by hash) with
the config it carries, refuses when the data or caches it was trained on changed since
(`on_changed_inputs=warn` goes on; see recsys.train.restore), runs full-ranking evaluation
with the run's own evaluation settings (each `eval.*` given here replaces one) and writes
`<run_dir>/eval.json` (atomically): the metrics, the settings, the cache dtype read (another
with `cache_dtype`: the same features in another storage, recsys.train.restore), the checkpoint
file and its sha256, and any input change it went on despite.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from recsys.atomic_io import write_json_atomic
from recsys.cache.file_fingerprint import file_sha256
from recsys.cli import CONFIG_PATH, refusals_exit
from recsys.config.schema import check_config
from recsys.train.builders import cached_encoders
from recsys.train.restore import restore_run

log = logging.getLogger(__name__)


def evaluate(
    run_dir: str | Path, checkpoint: str, stages: list[str], overrides: DictConfig
) -> dict[str, Any]:
    """Evaluate ``run_dir``'s checkpoint on ``stages``; returns {"val": {...}, "test": {...},
    "eval": the evaluation settings used, "cache_dtype": the dtype of the caches read (null:
    none), "checkpoint": {"file", "sha256"}, "changed_inputs"}. ``overrides`` is the composed
    eval config: its non-null ``eval.*`` replace the run's own, its ``data.*`` (if any) are
    merged in, ``on_changed_inputs`` and ``cache_dtype`` are passed on."""
    run_dir = Path(run_dir)
    given = OmegaConf.to_container(overrides.eval, resolve=True) if "eval" in overrides else {}
    chosen = {k: v for k, v in given.items() if v is not None}
    merge = {"eval": chosen, "data": overrides.get("data") or {}}
    run = restore_run(run_dir, checkpoint, merge, overrides.get("on_changed_inputs", "refuse"),
                      cache_dtype=overrides.get("cache_dtype"))
    cfg, dm, module = run.config, run.datamodule, run.module
    trainer = pl.Trainer(
        accelerator=overrides.accelerator,
        devices=overrides.devices,
        strategy=overrides.strategy,
        use_distributed_sampler=False,  # the datamodule shards users itself, unpadded
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    out: dict[str, Any] = {
        "checkpoint": {"file": str(run.checkpoint), "sha256": file_sha256(run.checkpoint)},
        "changed_inputs": run.changed_inputs,
        "eval": OmegaConf.to_container(cfg.eval),
        "cache_dtype": cfg.cache.dtype if cached_encoders(cfg) else None,
    }
    for stage in stages:
        run = trainer.validate if stage == "val" else trainer.test
        metrics = run(module, datamodule=dm, verbose=False)[0]
        out[stage] = {k.split("/", 1)[1]: float(v) for k, v in metrics.items() if k.startswith(f"{stage}/")}
        log.info("%s: %s", stage, out[stage])
    if trainer.is_global_zero:
        write_json_atomic(run_dir / "eval.json", out)
    return out


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="eval")
@refusals_exit
def main(cfg: DictConfig) -> None:
    check_config(cfg, "eval")
    out = evaluate(cfg.run_dir, cfg.checkpoint, list(cfg.stages), cfg)
    for stage in cfg.stages:
        print(stage, " ".join(f"{k}={v:.4f}" for k, v in sorted(out[stage].items())))


if __name__ == "__main__":
    main()
