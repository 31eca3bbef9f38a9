"""Config -> objects: the datamodule, the item tower's source, the model, callbacks, loggers.

Shared by `recsys-train`, `recsys-eval` and `recsys-export` so all build exactly the same
thing from a (composed or saved) config. Nothing here knows any particular tower: a tower
class declares what it reads (``ItemTower.reads``) and whether it has a layer schedule, the
source is built accordingly (``build_item_source``), and the tower builds itself from a
``TowerContext`` (``recsys.adapters``). The model comes from the user-encoder registry
(``model.name``); only trainer, callbacks and loggers are instantiated from ``_target_``, and
only for training.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recsys.adapters import FRAMEWORK_KEYS, SCHEDULE_KEYS, TowerContext, tower_class
from recsys.adapters.backbone import LiveEncoders
from recsys.adapters.layer_schedule import select_entries
from recsys.adapters.modality_mask import set_eval_modalities, set_modality_dropout
from recsys.cache.codecs import SOURCE_DTYPE
from recsys.cache.file_fingerprint import media_fingerprint_of
from recsys.cache.inputs import cache_inputs_fingerprint
from recsys.cache.integrity import DEFAULT_VERIFY, read_manifest
from recsys.cache.manifest import CacheMismatchError, CachePaths, manifest_fingerprint
from recsys.cache.store import feature_store, open_caches
from recsys.config.schema import job_config
from recsys.data.datamodule import SequenceDataModule
from recsys.data.subsample import Subsample
from recsys.models import build_user_encoder
from recsys.models.recommender import SequentialRecommender
from recsys.train.module import RecommenderModule

log = logging.getLogger(__name__)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def adapter_encoders(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """modality -> encoder config, for the modalities the adapter lists (``adapter.modalities``)
    that have an encoder selected: ``encoder/image=none`` turns a two-modality adapter into a
    text-only one (the config check says whether its tower allows that)."""
    wanted = list(cfg.adapter.get("modalities") or [])
    encoders = {m: _plain(cfg.encoder[m]) for m in wanted if cfg.encoder.get(m)}  # none.yaml -> {}
    skipped = [m for m in wanted if m not in encoders]
    if skipped:
        log.info("adapter %s: no encoder selected for %s, using %s", cfg.label, skipped, list(encoders))
    return encoders


def cached_encoders(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """modality -> encoder config, for the modalities whose CACHED features the adapter reads
    (none unless its tower declares ``reads = "cache"``)."""
    return adapter_encoders(cfg) if tower_class(cfg.adapter.name).reads == "cache" else {}


def build_datamodule(cfg: DictConfig) -> SequenceDataModule:
    """The set-up datamodule of ``cfg.data``, training on ``cfg.data.subsample`` (absent from
    the configs of runs made before it existed: all the training data; its seed, absent or
    null: the run's)."""
    subsample = _plain(cfg.data.get("subsample")) or {}
    if subsample.get("seed") is None:
        subsample["seed"] = cfg.seed
    dm = SequenceDataModule(
        processed_dir=cfg.data.processed_dir,
        window=cfg.data.protocol.window,
        batch_size=cfg.data.batch_size,
        eval_batch_size=cfg.data.eval_batch_size,
        num_workers=cfg.data.num_workers,
        seed=cfg.seed,
        train_targets=cfg.loss.get("targets", "windows"),
        subsample=Subsample(**subsample),
    )
    dm.setup()
    return dm


def _schedule(cfg: DictConfig) -> dict[str, Any]:
    """The adapter's layer schedule as ``select_entries`` keywords."""
    if not tower_class(cfg.adapter.name).layer_schedule:
        return {"last_only": True}
    return {"layers": _plain(cfg.adapter.get("layers")), "layer_groups": cfg.adapter.get("layer_groups")}


def _cached_features(cfg: DictConfig, dm: SequenceDataModule) -> tuple[Any, dict[str, Any]]:
    """(FeatureStore of the scheduled cached entries, cache facts). Each cache is verified
    against its checksum and against the inputs fingerprint of the dataset's items as its
    encoder reads them (recsys/cache/inputs.py)."""
    encoders = cached_encoders(cfg)
    records = dm.items.to_dicts()
    media = media_fingerprint_of(cfg.data)
    expected = {}
    for modality, enc in encoders.items():
        paths = CachePaths.of(cfg.cache.dir, enc["name"])
        try:
            manifest = read_manifest(paths)
        except CacheMismatchError as err:
            raise CacheMismatchError(
                f"{err}: rebuild it with `recsys-cache data={cfg.data.name} encoder/{modality}={enc['name']}`"
            ) from None
        if manifest is None:
            dtype = cfg.cache.get("dtype", SOURCE_DTYPE)
            raise FileNotFoundError(
                f"no {dtype} {modality} cache for encoder {enc['name']!r} in {cfg.cache.dir}: run "
                f"`recsys-cache data={cfg.data.name} encoder/{modality}={enc['name']}"
                + ("" if dtype == SOURCE_DTYPE else f" cache.dtype={dtype}")
                + "` (recsys-train does it itself with prepare=true)"
            )
        expected[modality] = cache_inputs_fingerprint(manifest["encoder"], records, media)
    opened = open_caches(
        cfg.cache.dir,
        {m: e["name"] for m, e in encoders.items()},
        expected,
        verify=cfg.cache.get("verify", DEFAULT_VERIFY),
        lock_wait_s=cfg.cache.get("lock_wait_s"),
        dtype=cfg.cache.get("dtype"),  # a cache of another dtype in cache.dir is never read
    )
    manifests = {m: cache.manifest for m, cache in opened.items()}
    # The schedule picks among the CACHED entries: all of an encoder's, or the subset a cache
    # built with encoder.layer_groups kept.
    layers = select_entries({m: man["encoder"]["layers"] for m, man in manifests.items()}, **_schedule(cfg))
    facts = {
        "cache_build_s": sum(float(man["build"]["seconds"]) for man in manifests.values()),
        "cache_bytes": sum(int(man["checksum"]["bytes"]) for man in manifests.values()),
        "cache_fingerprints": {m: manifest_fingerprint(man) for m, man in manifests.items()},
        "cache_same_features_as": {m: man.get("same_features_as", []) for m, man in manifests.items()},
    }
    store = feature_store(opened, layers, residency=cfg.cache.residency)
    log.info("features: %s", {m: (layers[m], store.widths[m]) for m in store.modalities})
    return store, facts


def build_item_source(cfg: DictConfig, dm: SequenceDataModule) -> tuple[Any, dict[str, Any]]:
    """What the adapter's tower reads (``ItemTower.reads``): a ``FeatureStore`` of the cached
    hidden states, ``LiveEncoders``, or None; and the cache facts for results.json
    (``cache_build_s``, ``cache_bytes``, null without a cache; ``cache_fingerprints``:
    modality -> ``manifest_fingerprint`` of the cache read, {} without one;
    ``cache_same_features_as``: modality -> the fingerprints of earlier builds of the same
    features, recsys/cache/manifest.py)."""
    no_cache = {"cache_build_s": None, "cache_bytes": None, "cache_fingerprints": {},
                "cache_same_features_as": {}}
    reads = tower_class(cfg.adapter.name).reads
    if reads == "cache":
        return _cached_features(cfg, dm)
    if reads == "encoders":
        return LiveEncoders(adapter_encoders(cfg), dm.items.to_dicts(), **_schedule(cfg)), no_cache
    return None, no_cache


def tower_options(cfg: DictConfig) -> dict[str, Any]:
    """The adapter config minus the keys the framework consumes: the tower's own options."""
    framework = FRAMEWORK_KEYS + SCHEDULE_KEYS
    return {k: v for k, v in _plain(cfg.adapter).items() if k not in framework}


def build_module(
    cfg: DictConfig, dm: SequenceDataModule, source: Any, inputs: dict[str, Any] | None = None
) -> RecommenderModule:
    """The Lightning module of ``cfg`` over ``source``; ``inputs`` (data and cache
    fingerprints) go into its checkpoints."""
    model_cfg = _plain(cfg.model)
    user_encoder = build_user_encoder(model_cfg.pop("name"), **model_cfg)
    context = TowerContext(source, dm.num_items, int(cfg.model.d_model))
    tower = tower_class(cfg.adapter.name).from_context(context, **tower_options(cfg))
    # Configs of runs made before these keys existed: no dropout, every modality.
    set_modality_dropout(tower, float(cfg.adapter.get("modality_dropout", 0.0)))
    if (modalities := cfg.eval.get("modalities")) is not None:
        set_eval_modalities(tower, list(modalities))
    return RecommenderModule(
        SequentialRecommender(tower, user_encoder),
        dm.train_popularity,
        lrs=dict(cfg.optimizer.lr),
        weight_decay=float(cfg.optimizer.get("weight_decay", 0.0)),
        loss=cfg.loss.name,
        mask_history=cfg.loss.mask_history,
        cross_rank_negatives=cfg.loss.cross_rank_negatives,
        ks=tuple(cfg.eval.ks),
        tie_policy=cfg.eval.tie_policy,
        chunk_size=cfg.eval.chunk_size,
        mask_target_in_history=cfg.eval.mask_target_in_history,
        ann=_plain(cfg.eval.get("ann")),  # absent from the configs of runs made before it existed
        config=job_config(cfg),
        inputs=inputs,
    )


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """Training callbacks (``callbacks.*``, instantiated from ``_target_``)."""
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]


def build_loggers(cfg: DictConfig) -> list[Any]:
    """Training loggers (``logger.*``, instantiated from ``_target_``)."""
    return [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
