"""Rebuild a ``recsys-train`` run from its directory: exactly its model, on the data it learnt from.

``restore_run(run_dir, checkpoint)``:

1. picks the checkpoint file: for ``best`` / ``last``, the file ``results.json`` records,
   verified by its sha256 (``recsys.train.run_dir.recorded_checkpoint``), or, for a run
   killed before it wrote results.json, ``checkpoints/<best|last>.ckpt``; any other value is
   a path to a ``.ckpt`` file, taken as given;
2. loads it with ``torch.load(weights_only=True)`` and reads the run's resolved config from
   it (every checkpoint carries it as its hyper-parameters), checked as an UNTRUSTED config
   (a run directory may come from someone else): nothing is built from a ``_target_`` in
   the file, the model comes from the registries, and a config naming anything else is
   refused with a ``ConfigError`` before any import or data access (``recsys.config.schema``);
3. rebuilds the datamodule, the item tower's source and the module exactly as training did
   (``recsys.train.builders``) and compares the data and cache fingerprints the checkpoint
   was trained on (``checkpoint["inputs"]``) with today's: a difference (a re-prepared
   dataset, a cache rebuilt with other features; a bit-identical rebuild is no change,
   recsys/cache/manifest.py) is refused with ``RunDirError`` naming each one, unless
   ``on_changed_inputs="warn"``; under ``cache_dtype`` the caches are compared by the float16
   cache their features come from (``source_fingerprint``), so another dtype of the same
   features is no change and a rebuilt source still is;
4. loads the weights.

Used by ``recsys-eval`` and ``recsys-export``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recsys.cache.codecs import SOURCE_DTYPE
from recsys.cache.integrity import read_manifest
from recsys.cache.manifest import CachePaths, dtype_dir, known_fingerprints, source_dir, source_fingerprint
from recsys.config.differences import differences
from recsys.config.schema import check_config
from recsys.data.datamodule import SequenceDataModule
from recsys.train.builders import build_datamodule, build_item_source, build_module, cached_encoders
from recsys.train.checkpoint_io import load_checkpoint
from recsys.train.module import RecommenderModule
from recsys.train.run_dir import RunDirError, inputs_changes, read_results, recorded_checkpoint

log = logging.getLogger(__name__)
ON_CHANGED_INPUTS = ("refuse", "warn")
NAMED_CHECKPOINTS = ("best", "last")


@dataclass
class RestoredRun:
    """A run rebuilt from its directory."""

    config: DictConfig
    datamodule: SequenceDataModule
    module: RecommenderModule
    checkpoint: Path
    results: dict[str, Any] | None  # results.json (None: the run was killed before writing it)
    changed_inputs: list[str] = field(default_factory=list)  # kept under on_changed_inputs=warn


def _run_results(run_dir: Path) -> dict[str, Any] | None:
    """``read_results`` of a directory that must be a run directory."""
    if not run_dir.is_dir():
        raise RunDirError(f"run_dir {run_dir} is not a directory: pass a recsys-train run directory")
    try:
        return read_results(run_dir)
    except RunDirError as err:
        raise RunDirError(f"{err}: pass checkpoint=<path to a .ckpt> to restore a checkpoint "
                          "without it") from None


def _checkpoint_file(run_dir: Path, checkpoint: str, results: Mapping[str, Any] | None) -> Path:
    if checkpoint not in NAMED_CHECKPOINTS:
        path = Path(checkpoint)
        if not path.is_file():
            raise RunDirError(f"checkpoint {path} not found; pass checkpoint=best|last|<path to a .ckpt>")
        return path
    if results is not None:
        return recorded_checkpoint(run_dir, results, checkpoint)
    path = run_dir / "checkpoints" / f"{checkpoint}.ckpt"  # killed before results.json: nothing to verify
    if not path.is_file():
        raise RunDirError(f"{run_dir} holds no results.json and no {path.name}: nothing to restore")
    log.info("%s has no results.json (a killed run): restoring %s as it is", run_dir, path)
    return path


def reading_cache_dtype(cfg: DictConfig, dtype: str) -> DictConfig:
    """``cfg`` reading the ``dtype`` form of its caches: the float16 caches it read (or the
    source of the converted ones it read), as stored in their ``dtype_dir``."""
    own = cfg.cache.dtype
    float16_dir = cfg.cache.dir if own == SOURCE_DTYPE else str(source_dir(cfg.cache.dir, own))
    return OmegaConf.merge(cfg, {"cache": {"dtype": dtype, "dir": dtype_dir(float16_dir, dtype)}})


def _cache_sources(cfg: DictConfig, recorded: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """modality -> ``source_fingerprint`` of each cache ``cfg`` reads, from the manifests on
    disk now (None: no cache). With ``recorded`` (modality -> the fingerprint a checkpoint
    read): the recorded one's source when that cache is still on disk as it was (or rebuilt
    bit-identically: ``known_fingerprints``), else the
    recorded fingerprint itself (its source is then unknown, and matches nothing converted)."""
    sources: dict[str, str | None] = {}
    for modality, enc in cached_encoders(cfg).items():
        manifest = read_manifest(CachePaths.of(cfg.cache.dir, enc["name"]))
        if recorded is None:
            sources[modality] = manifest and source_fingerprint(manifest)
        else:
            unchanged = manifest is not None and recorded.get(modality) in known_fingerprints(manifest)
            sources[modality] = source_fingerprint(manifest) if unchanged else recorded.get(modality)
    return sources


def _changed_inputs(state: Mapping[str, Any], trained: DictConfig, cfg: DictConfig,
                    today: Mapping[str, Any], same_features_as: Mapping[str, Any]) -> list[str]:
    """What differs between the inputs ``state`` was trained on (with config ``trained``) and
    ``today``'s, read with ``cfg``: fingerprints (an earlier build of today's features in
    ``same_features_as`` is no change), or for caches of another dtype than the trained
    ones, the float16 caches both come from."""
    if cfg.cache.get("dtype") == trained.cache.get("dtype"):
        return inputs_changes(state, today, same_features_as)
    recorded = state.get("inputs") or {}
    trained_on = {"data_fingerprint": recorded.get("data_fingerprint"),
                  "cache_sources": _cache_sources(trained, recorded.get("cache_fingerprints") or {})}
    now = {"data_fingerprint": today["data_fingerprint"], "cache_sources": _cache_sources(cfg)}
    return differences(trained_on, now, labels=("trained on", "now")) if recorded else []


def restore_run(
    run_dir: str | Path,
    checkpoint: str = "best",
    overrides: Mapping[str, Any] | None = None,
    on_changed_inputs: str = "refuse",
    cache_dtype: str | None = None,
) -> RestoredRun:
    """Rebuild ``run_dir``'s model from ``checkpoint`` (best | last | a path), ``overrides``
    merged into its config (e.g. other ``eval.*`` settings), reading its caches as
    ``cache_dtype`` (None: the dtype it was trained on)."""
    if on_changed_inputs not in ON_CHANGED_INPUTS:
        raise ValueError(f"on_changed_inputs {on_changed_inputs!r} not in {ON_CHANGED_INPUTS}")
    run_dir = Path(run_dir)
    results = _run_results(run_dir)
    path = _checkpoint_file(run_dir, checkpoint, results)
    state = load_checkpoint(path)
    saved = state.get("hyper_parameters")
    if not saved:
        raise RunDirError(f"{path} carries no run config (hyper-parameters): not a recsys-train checkpoint")
    trained = OmegaConf.merge(OmegaConf.create(saved), overrides or {})
    check_config(trained, "train", untrusted=True)
    cfg = trained if cache_dtype is None else reading_cache_dtype(trained, cache_dtype)
    dm = build_datamodule(cfg)
    source, facts = build_item_source(cfg, dm)
    today = {"data_fingerprint": dm.data_fingerprint,
             "cache_fingerprints": facts.get("cache_fingerprints", {})}
    changed = _changed_inputs(state, trained, cfg, today, facts.get("cache_same_features_as", {}))
    if changed:
        detail = "\n  ".join(changed)
        if on_changed_inputs == "refuse":
            raise RunDirError(
                f"{path} was trained on other data or caches than {cfg.data.processed_dir} and "
                f"{cfg.cache.dir} hold now:\n  {detail}\nre-prepare the data it was trained on, or pass "
                "on_changed_inputs=warn to go on anyway"
            )
        log.warning("%s was trained on other inputs (on_changed_inputs=warn):\n  %s", path, detail)
    module = build_module(cfg, dm, source)
    module.load_state_dict(state["state_dict"])
    return RestoredRun(cfg, dm, module, path, results, changed)
