"""Rebuild a finished ``recsys-train`` run from its directory: config, data, model, weights.

``restore_run(run_dir, checkpoint)`` reads the resolved config stored in
``<run_dir>/results.json``, rebuilds the datamodule, the feature store and the module exactly
as training did (``recsys.train.builders``) and loads the checkpoint with
``torch.load(weights_only=True)`` (no unpickling of arbitrary objects from a file someone
sent you). Used by ``recsys-eval`` and ``recsys-export``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from recsys.data.datamodule import SequenceDataModule
from recsys.train.builders import build_datamodule, build_feature_store, build_module
from recsys.train.module import RecommenderModule


def checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    """``best`` | ``last`` (under ``<run_dir>/checkpoints/``) | a path to a ``.ckpt`` file."""
    named = checkpoint in ("best", "last")
    path = run_dir / "checkpoints" / f"{checkpoint}.ckpt" if named else Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; pass checkpoint=best|last|<path to .ckpt>")
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint's contents, loaded with ``weights_only=True``: tensors and plain
    containers only; a file that would run code when unpickled raises instead."""
    return torch.load(path, map_location="cpu", weights_only=True)


def run_config(run_dir: Path, overrides: Mapping[str, Any] | None = None) -> DictConfig:
    """The run's resolved config (from its results.json), with ``overrides`` merged in."""
    results_file = run_dir / "results.json"
    if not results_file.is_file():
        raise FileNotFoundError(f"{results_file} not found: run_dir must be a recsys-train run directory")
    cfg = OmegaConf.create(json.loads(results_file.read_text())["config"])
    return OmegaConf.merge(cfg, overrides or {})


def restore_run(
    run_dir: str | Path, checkpoint: str = "best", overrides: Mapping[str, Any] | None = None
) -> tuple[DictConfig, SequenceDataModule, RecommenderModule]:
    """(config, datamodule, module with the checkpoint's weights) of a training run."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir, overrides)
    dm = build_datamodule(cfg)
    store, _ = build_feature_store(cfg, dm)
    module = build_module(cfg, dm, store)
    module.load_state_dict(load_checkpoint(checkpoint_path(run_dir, checkpoint))["state_dict"])
    return cfg, dm, module
