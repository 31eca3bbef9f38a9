"""``recsys-cache``: run every configured frozen encoder once over all items of a processed
dataset and cache the per-layer hidden states (see recsys/cache/build.py).

Usage:
    recsys-cache data=movielens encoder/text=minilm encoder/image=efficientnet_lite0
    recsys-cache encoder/image=none cache.on_mismatch=refuse
    recsys-cache data=<dataset with audio_path> encoder/audio=ast encoder/video=videomae_base
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from recsys.cache.build import build_cache
from recsys.cache.file_fingerprint import media_fingerprint_of
from recsys.cache.inputs import cache_inputs_fingerprint
from recsys.cli import CONFIG_PATH, refusals_exit
from recsys.config.schema import check_config
from recsys.data.processed import ProcessedDataset
from recsys.encoders import build_encoder

log = logging.getLogger(__name__)

MODALITIES = ("text", "image", "video", "audio")


def run(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """``recsys-cache``: check the config, then build (or reuse) every configured encoder's
    cache; modality -> manifest."""
    check_config(cfg, "cache")
    return build_caches(cfg)


def build_caches(
    cfg: DictConfig, modalities: tuple[str, ...] | list[str] = MODALITIES
) -> dict[str, dict[str, Any]]:
    """Build (or reuse) the cache of each configured encoder of ``modalities``, each keyed
    by the inputs fingerprint of what that encoder reads (recsys/cache/inputs.py);
    modality -> manifest."""
    records = ProcessedDataset.load(cfg.data.processed_dir).items.to_dicts()
    media = media_fingerprint_of(cfg.data)
    manifests = {}
    for modality in modalities:
        encoder_cfg = cfg.encoder.get(modality)
        if not encoder_cfg:
            continue
        encoder = build_encoder(OmegaConf.to_container(encoder_cfg, resolve=True))
        manifest = build_cache(
            encoder,
            records,
            cache_inputs_fingerprint(encoder.identity(), records, media),
            cfg.cache.dir,
            dtype=cfg.cache.dtype,
            on_mismatch=cfg.cache.on_mismatch,
            amp=cfg.cache.amp,
            device=cfg.cache.device,
            progress_bar=cfg.cache.progress_bar,
            verify=cfg.cache.verify,
            lock_wait_s=cfg.cache.lock_wait_s,
        )
        build = manifest["build"]
        timing = f"in {build['seconds']:.1f} s, {build['items_per_second']} items/s"
        how = "reused (nothing recomputed; built earlier " if build["reused"] else "built ("
        print(
            f"[recsys-cache] {modality}/{encoder.name}: {manifest['shape']} "
            f"{manifest['dtype']} {how}{timing}, {build['missing']} missing, "
            f"{build['failed']} failed) -> {cfg.cache.dir}"
        )
        manifests[modality] = manifest
    if not manifests:
        log.warning("no encoder configured (encoder/<modality>=none for every one of %s)", list(modalities))
    return manifests


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="cache")
@refusals_exit
def main(cfg: DictConfig) -> None:
    """Hydra entry point of ``recsys-cache``."""
    run(cfg)
