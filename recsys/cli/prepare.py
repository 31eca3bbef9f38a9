"""Make sure a training job's inputs exist: the processed dataset and the feature caches.

`recsys-train` calls this first (config `prepare: true`). Both steps are the ones behind
`recsys-prep` and `recsys-cache` and reuse their outputs when fingerprints match, so it is
cheap when everything is already there; only the modalities the adapter reads are cached.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from data_prep.prep import prepare
from recsys.cli.cache import build_caches
from recsys.train.builders import cached_encoders


def prepare_inputs(cfg: DictConfig) -> None:
    """Build (or reuse) ``cfg.data``'s processed dataset and the adapter's caches (waiting
    up to ``cache.lock_wait_s`` for another process building either)."""
    prepare(OmegaConf.to_container(cfg.data, resolve=True), lock_wait_s=cfg.cache.lock_wait_s)
    modalities = list(cached_encoders(cfg))
    if modalities:
        build_caches(cfg, modalities=modalities)
