"""Config -> objects: the datamodule, the feature store, the model, callbacks and loggers.

Shared by `recsys-train` and `recsys-eval` so both build exactly the same thing from a
(composed or saved) Hydra config.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recsys.adapters import build_item_tower, layers_per_modality
from recsys.adapters.layer_schedule import group_layer_schedule
from recsys.cache.features import FeatureStore
from recsys.cache.manifest import CachePaths, read_json
from recsys.cache.store import load_feature_store
from recsys.data.datamodule import SequenceDataModule
from recsys.models.recommender import SequentialRecommender
from recsys.train.module import RecommenderModule

log = logging.getLogger(__name__)


def adapter_encoders(cfg: DictConfig) -> dict[str, DictConfig]:
    """modality -> encoder config, for the modalities the adapter consumes
    (``adapter.modalities``) that have an encoder selected: ``encoder/image=none`` turns a
    two-modality adapter into a text-only one (its streams must allow that)."""
    wanted = list(cfg.adapter.get("modalities") or [])
    encoders = {m: cfg.encoder[m] for m in wanted if cfg.encoder.get(m)}  # none.yaml -> {}
    skipped = [m for m in wanted if m not in encoders]
    if wanted and not encoders:
        raise ValueError(
            f"adapter {cfg.adapter.name!r} reads modalities {wanted} but no encoder is selected "
            f"for any of them: choose one, e.g. encoder/{wanted[0]}=<name>"
        )
    if skipped:
        log.info("adapter %s: no encoder selected for %s, using %s", cfg.label, skipped, list(encoders))
    return encoders


def active_encoders(cfg: DictConfig) -> dict[str, DictConfig]:
    """modality -> encoder config, for the modalities whose CACHED features the adapter reads:
    none when it runs its encoders in the training step (``adapter.needs_encoders``)."""
    return {} if cfg.adapter.get("needs_encoders") else adapter_encoders(cfg)


def build_datamodule(cfg: DictConfig) -> SequenceDataModule:
    dm = SequenceDataModule(
        processed_dir=cfg.data.processed_dir,
        window=cfg.data.protocol.window,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        seed=cfg.seed,
    )
    dm.setup()
    return dm


def build_feature_store(cfg: DictConfig, dm: SequenceDataModule) -> tuple[FeatureStore | None, dict]:
    """Load the cached hidden states the adapter needs; returns (store, cache facts:
    ``cache_build_s`` and ``cache_bytes`` summed over the encoders read, null without a cache)."""
    encoders = active_encoders(cfg)
    if not encoders:
        return None, {"cache_build_s": None, "cache_bytes": None}
    manifests = {}
    for modality, enc in encoders.items():
        manifests[modality] = read_json(CachePaths.of(cfg.cache.dir, enc.name).manifest)
        if manifests[modality] is None:
            raise FileNotFoundError(
                f"no {modality} cache for encoder {enc.name!r} in {cfg.cache.dir}: run "
                f"`recsys-cache data={cfg.data.name} encoder/{modality}={enc.name}` "
                "(recsys-train does it itself with prepare=true)"
            )
    # The schedule picks among the CACHED hidden-state entries (all of the encoder's, or the
    # subset a cache built with encoder.layer_groups kept). No layer dropping (layer_groups
    # null) keeps every cached entry of the shallowest encoder and groups deeper ones to as
    # many blocks, so paired (inter) streams stay aligned.
    cached = {m: man["encoder"]["layers"] for m, man in manifests.items()}
    groups = cfg.adapter.get("layer_groups") or min(map(len, cached.values())) - 1
    explicit = layers_per_modality(cfg.adapter.get("layers"), list(encoders)) or {}
    layers = {
        m: explicit.get(m) or [entries[i] for i in group_layer_schedule(len(entries), groups)]
        for m, entries in cached.items()
    }
    facts = {
        "cache_build_s": sum(float(man["build"]["seconds"]) for man in manifests.values()),
        "cache_bytes": sum(
            CachePaths.of(cfg.cache.dir, e.name).features.stat().st_size for e in encoders.values()
        ),
    }
    store = load_feature_store(
        cfg.cache.dir,
        {m: e.name for m, e in encoders.items()},
        layers,
        residency=cfg.cache.residency,
        fingerprint=dm.fingerprint,
    )
    log.info("features: %s", {m: (layers[m], store.widths[m]) for m in store.modalities})
    return store, facts


def build_module(cfg: DictConfig, dm: SequenceDataModule, store: FeatureStore | None) -> RecommenderModule:
    adapter_cfg = OmegaConf.to_container(cfg.adapter, resolve=True)
    if adapter_cfg.pop("needs_encoders", False):
        # Encoders in the training step (recsys/adapters/backbone.py): the tower gets the
        # encoder configs and the item records 1..N instead of a store, and its layer options.
        encoders = adapter_encoders(cfg)
        adapter_cfg.pop("modalities")
        adapter_cfg["encoders"] = {m: OmegaConf.to_container(e, resolve=True) for m, e in encoders.items()}
        adapter_cfg["items"] = dm.items.to_dicts()
    else:
        # The store already holds only the scheduled layers (build_feature_store).
        for key in ("modalities", "layers", "layer_groups"):
            adapter_cfg.pop(key, None)
        if store is None:
            adapter_cfg["num_items"] = dm.num_items
    tower = build_item_tower(adapter_cfg.pop("name"), store, **adapter_cfg)
    user_encoder = instantiate(cfg.model)
    model = SequentialRecommender(tower, user_encoder)
    return RecommenderModule(
        model,
        dm.train_popularity,
        lrs=dict(cfg.optimizer.lr),
        loss=cfg.loss.name,
        mask_history=cfg.loss.mask_history,
        cross_rank_negatives=cfg.loss.cross_rank_negatives,
        ks=tuple(cfg.eval.ks),
        tie_policy=cfg.eval.tie_policy,
        chunk_size=cfg.eval.chunk_size,
    )


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]


def build_loggers(cfg: DictConfig) -> list[Any]:
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
