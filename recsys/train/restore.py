"""Rebuild a ``recsys-train`` run from its directory: config, data, model, weights.

``restore_run(run_dir, checkpoint)`` reads the run's resolved config, checks it as an
UNTRUSTED config (a run directory may come from someone else) and rebuilds the datamodule,
the item tower's source and the module exactly as training did (``recsys.train.builders``),
then loads the checkpoint with ``torch.load(weights_only=True)``. Nothing is built from a
``_target_`` in the file: the model comes from the registries (tower, user encoder, encoder
kinds, readers), and a config naming anything else is refused with a ``ConfigError`` before
any import or file access (``recsys.config.schema``).

Where the config comes from: ``results.json`` (written when a run ends, however it ends), or,
for a run killed before that (SIGKILL), Hydra's own record ``.hydra/config.yaml`` resolved
with ``.hydra/hydra.yaml``. Used by ``recsys-eval`` and ``recsys-export``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import setup_globals
from omegaconf import DictConfig, OmegaConf

from recsys.config.schema import check_config
from recsys.data.datamodule import SequenceDataModule
from recsys.train.builders import build_datamodule, build_item_source, build_module
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


def _hydra_record(run_dir: Path) -> dict[str, Any]:
    """The job config Hydra saved in ``<run_dir>/.hydra/``, resolved as it was in the run
    (``${hydra:...}`` from ``hydra.yaml``; the running job's own Hydra state is kept)."""
    record = run_dir / ".hydra"
    cfg = OmegaConf.load(record / "config.yaml")
    setup_globals()  # the ${hydra:...} and ${now:...} resolvers, also outside a Hydra app
    import recsys.cli  # noqa: F401  (the project's own resolvers)

    hydra_state = HydraConfig.instance()  # what ${hydra:...} reads: its cfg's hydra node
    previous = hydra_state.cfg
    hydra_state.cfg = OmegaConf.load(record / "hydra.yaml")
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    finally:
        hydra_state.cfg = previous


def saved_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config: from ``results.json``, else from ``.hydra/`` (a run killed
    before it could write results.json)."""
    results_file = run_dir / "results.json"
    if results_file.is_file():
        return json.loads(results_file.read_text())["config"]
    if (run_dir / ".hydra" / "config.yaml").is_file():
        return _hydra_record(run_dir)
    raise FileNotFoundError(
        f"{run_dir} holds neither results.json nor .hydra/config.yaml: run_dir must be a "
        "recsys-train run directory"
    )


def run_config(run_dir: Path, overrides: Mapping[str, Any] | None = None) -> DictConfig:
    """The run's config with ``overrides`` merged in, checked as untrusted input."""
    cfg = OmegaConf.merge(OmegaConf.create(saved_config(run_dir)), overrides or {})
    check_config(cfg, "train", untrusted=True)
    return cfg


def restore_run(
    run_dir: str | Path, checkpoint: str = "best", overrides: Mapping[str, Any] | None = None
) -> tuple[DictConfig, SequenceDataModule, RecommenderModule]:
    """(config, datamodule, module with the checkpoint's weights) of a training run."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir, overrides)
    dm = build_datamodule(cfg)
    source, _ = build_item_source(cfg, dm)
    module = build_module(cfg, dm, source)
    module.load_state_dict(load_checkpoint(checkpoint_path(run_dir, checkpoint))["state_dict"])
    return cfg, dm, module
