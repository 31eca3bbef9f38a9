"""``recsys-cache``: run every configured frozen encoder once over all items of a processed
dataset and cache the per-layer hidden states (see recsys/cache/build.py).

``cache.dtype`` float16 (default) or float32 runs the encoders; any other dtype (bfloat16,
int8, int8_item_layer, float8_e4m3: recsys/cache/codecs.py) builds or reuses the float16
cache, then converts it into ``<float16 cache dir>/<dtype>/`` (recsys/cache/convert.py), so a
second dtype never runs the encoders again.

Usage:
    recsys-cache data=movielens encoder/text=minilm encoder/image=efficientnet_lite0
    recsys-cache encoder/image=none cache.on_mismatch=refuse
    recsys-cache data=<dataset with audio_path> encoder/audio=ast encoder/video=videomae_base
    recsys-cache data=movielens cache.dtype=int8    # -> data/cache/movielens/int8/
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from recsys.cache.build import build_cache
from recsys.cache.codecs import SOURCE_DTYPE, codec
from recsys.cache.convert import convert_cache
from recsys.cache.file_fingerprint import media_fingerprint_of
from recsys.cache.inputs import cache_inputs_fingerprint
from recsys.cache.manifest import source_dir
from recsys.cli import CONFIG_PATH, refusals_exit
from recsys.config.schema import check_config
from recsys.data.processed import ProcessedDataset
from recsys.encoders import build_encoder
from recsys.encoders.base import FrozenEncoder

log = logging.getLogger(__name__)

MODALITIES = ("text", "image", "video", "audio")


def run(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """``recsys-cache``: check the config, then build (or reuse) every configured encoder's
    cache; modality -> manifest."""
    check_config(cfg, "cache")
    return build_caches(cfg)


def cache_of(
    cache: DictConfig, encoder: FrozenEncoder, records: list[dict[str, Any]], fingerprint: str
) -> dict[str, Any]:
    """The manifest of the ``cache.dtype`` cache of ``encoder`` over ``records`` in
    ``cache.dir``: built (or reused), or for a converted dtype converted from the float16
    cache of the parent directory, which is built (or reused) first."""
    checks = {"on_mismatch": cache.on_mismatch, "verify": cache.verify, "lock_wait_s": cache.lock_wait_s}
    options = {"amp": cache.amp, "device": cache.device, "progress_bar": cache.progress_bar, **checks}
    if codec(cache.dtype).encoded:
        return build_cache(encoder, records, fingerprint, cache.dir, dtype=cache.dtype, **options)
    float16_dir = source_dir(cache.dir, cache.dtype)
    build_cache(encoder, records, fingerprint, float16_dir, dtype=SOURCE_DTYPE, **options)
    return convert_cache(float16_dir, encoder.name, cache.dtype, cache.dir, **checks)


def build_caches(
    cfg: DictConfig, modalities: tuple[str, ...] | list[str] = MODALITIES
) -> dict[str, dict[str, Any]]:
    """Build (or reuse) the cache of each configured encoder of ``modalities`` (``cache_of``),
    each keyed by the inputs fingerprint of what that encoder reads (recsys/cache/inputs.py);
    modality -> manifest."""
    records = ProcessedDataset.load(cfg.data.processed_dir).items.to_dicts()
    media = media_fingerprint_of(cfg.data)
    manifests = {}
    for modality in modalities:
        encoder_cfg = cfg.encoder.get(modality)
        if not encoder_cfg:
            continue
        encoder = build_encoder(OmegaConf.to_container(encoder_cfg, resolve=True))
        fingerprint = cache_inputs_fingerprint(encoder.identity(), records, media)
        manifest = cache_of(cfg.cache, encoder, records, fingerprint)
        build = manifest["build"]
        timing = f"in {build['seconds']:.1f} s, {build['items_per_second']} items/s"
        made = "converted from float16" if "converted_from" in build else "built"
        how = f"reused (nothing recomputed; {made} earlier " if build["reused"] else f"{made} ("
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
