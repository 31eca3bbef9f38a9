"""recsys-train: fit one method on one dataset, test at the best validation epoch.

    recsys-train experiment=demo
    recsys-train -m experiment=iisan_scientific_text seed=0,1,2
    recsys-train adapter=id data=scientific encoder/image=none logger=csv

Writes `<run dir>/results.json` (see recsys.train.results) whether the run completes or
fails, prints a summary table, and returns the best validation value of `eval.monitor`
(the objective for Hydra sweepers).
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from recsys.atomic_io import write_json_atomic
from recsys.cli import CONF_DIR
from recsys.cli.prepare import prepare_inputs
from recsys.eval.popularity import evaluate_popularity
from recsys.train.builders import (
    build_callbacks,
    build_datamodule,
    build_feature_store,
    build_loggers,
    build_module,
)
from recsys.train.efficiency import EfficiencyCallback
from recsys.train.results import format_summary

log = logging.getLogger(__name__)


def _floats(metrics: list[dict[str, Any]]) -> dict[str, float]:
    """Lightning's validate/test return value -> {"hr@10": 0.1, ...} without stage prefix."""
    merged = {k: float(v) for m in metrics for k, v in m.items()}
    return {k.split("/", 1)[1]: v for k, v in merged.items() if "/" in k}


def _finish_wandb() -> None:
    """One W&B run per job: close it even when a multirun goes on in this process."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()


def _completed(out_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The results of a finished job in ``out_dir`` made with ``config``, else None (none
    yet, failed, or another config: then the job runs again and overwrites them)."""
    path = out_dir / "results.json"
    if not path.is_file():
        return None
    try:
        done = json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("%s is unreadable: running the job again", path)
        return None
    if done.get("status") != "complete":
        return None
    if done.get("config") != config:
        log.warning("%s was made with another config: running the job again", path)
        return None
    return done


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job from a composed config and return its results record; with
    ``skip_complete``, a job already complete in its output dir is not run again."""
    out_dir = Path(cfg.paths.output_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    if cfg.get("skip_complete") and (done := _completed(out_dir, config)) is not None:
        log.info("skipping %s: already complete with this config (skip_complete=true)", out_dir)
        print(format_summary(done))
        return done
    results: dict[str, Any] = {
        "status": "failed",
        "method": cfg.label,
        "adapter": cfg.adapter.name,
        "dataset": cfg.data.name,
        "seed": int(cfg.seed),
        "metrics": {"val": None, "test": None},
        "baselines": {},
        "efficiency": {},
        "error": None,
        "config": config,
    }
    try:
        if cfg.prepare:
            prepare_inputs(cfg)
        pl.seed_everything(cfg.seed, workers=True)
        dm = build_datamodule(cfg)
        store, cache_facts = build_feature_store(cfg, dm)
        module = build_module(cfg, dm, store)
        callbacks = build_callbacks(cfg)
        loggers = build_loggers(cfg)
        trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
        trainer.fit(module, datamodule=dm, ckpt_path=cfg.ckpt_path)

        best = "best" if trainer.checkpoint_callback and trainer.checkpoint_callback.best_model_path else None
        results["metrics"]["val"] = _floats(
            trainer.validate(module, datamodule=dm, ckpt_path=best, verbose=False)
        )
        results["metrics"]["test"] = _floats(
            trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False)
        )
        results["baselines"]["popularity"] = {
            "test": evaluate_popularity(dm, ks=tuple(cfg.eval.ks), tie_policy=cfg.eval.tie_policy)
        }
        efficiency = next((c for c in callbacks if isinstance(c, EfficiencyCallback)), None)
        results["efficiency"] = (efficiency.summary() if efficiency else {}) | cache_facts
        results["status"] = "complete"
        for logger in loggers:
            logger.log_metrics(
                {f"summary/{k}": v for k, v in results["efficiency"].items() if isinstance(v, (int, float))}
            )
    except Exception:
        results["error"] = traceback.format_exc()
        raise
    finally:
        if rank_zero_only.rank == 0:  # DDP: one results.json, written by the global rank 0
            write_json_atomic(out_dir / "results.json", results)
        _finish_wandb()
    if rank_zero_only.rank == 0:
        print(format_summary(results))
        log.info("results: %s", out_dir / "results.json")
    return results


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    results = train(cfg)
    return results["metrics"]["val"].get(cfg.eval.monitor.split("/", 1)[1])


if __name__ == "__main__":
    main()
