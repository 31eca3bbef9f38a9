"""recsys-eval: re-evaluate a finished training run from its directory.

    recsys-eval run_dir=outputs/train/2026-11-23_12-00-00
    recsys-eval run_dir=... checkpoint=last stages=[test] eval.tie_policy=optimistic

Rebuilds the data, the cached features and the model from the run's resolved config
(stored in its results.json), loads the checkpoint safely (`weights_only=True`), runs
full-ranking evaluation and writes `<run_dir>/eval.json` (atomically).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from recsys.atomic_io import write_json_atomic
from recsys.cli import CONF_DIR
from recsys.train.builders import build_datamodule, build_feature_store, build_module

log = logging.getLogger(__name__)


def _checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    path = (
        run_dir / "checkpoints" / f"{checkpoint}.ckpt" if checkpoint in ("best", "last") else Path(checkpoint)
    )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; pass checkpoint=best|last|<path to .ckpt>")
    return path


def _run_config(run_dir: Path, overrides: DictConfig) -> DictConfig:
    results_file = run_dir / "results.json"
    if not results_file.is_file():
        raise FileNotFoundError(f"{results_file} not found: run_dir must be a recsys-train run directory")
    cfg = OmegaConf.create(json.loads(results_file.read_text())["config"])
    return OmegaConf.merge(cfg, {"eval": overrides.eval, "data": overrides.get("data") or {}})


def evaluate(
    run_dir: str | Path, checkpoint: str, stages: list[str], overrides: DictConfig
) -> dict[str, Any]:
    """Evaluate ``run_dir``'s checkpoint on ``stages``; returns {"val": {...}, "test": {...}}."""
    run_dir = Path(run_dir)
    cfg = _run_config(run_dir, overrides)
    dm = build_datamodule(cfg)
    store, _ = build_feature_store(cfg, dm)
    module = build_module(cfg, dm, store)
    ckpt = torch.load(_checkpoint_path(run_dir, checkpoint), map_location="cpu", weights_only=True)
    module.load_state_dict(ckpt["state_dict"])
    trainer = pl.Trainer(
        accelerator=overrides.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    out: dict[str, Any] = {"checkpoint": str(checkpoint)}
    for stage in stages:
        run = trainer.validate if stage == "val" else trainer.test
        metrics = run(module, datamodule=dm, verbose=False)[0]
        out[stage] = {k.split("/", 1)[1]: float(v) for k, v in metrics.items() if k.startswith(f"{stage}/")}
        log.info("%s: %s", stage, out[stage])
    write_json_atomic(run_dir / "eval.json", out)
    return out


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    out = evaluate(cfg.run_dir, cfg.checkpoint, list(cfg.stages), cfg)
    for stage in cfg.stages:
        print(stage, " ".join(f"{k}={v:.4f}" for k, v in sorted(out[stage].items())))


if __name__ == "__main__":
    main()
