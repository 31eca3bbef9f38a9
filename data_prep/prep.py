"""``recsys-prep``: raw dataset -> canonical processed dataset (Hydra entry point).

    recsys-prep data=scientific                      # conf/data/scientific.yaml
    recsys-prep data=synthetic data.raw.n_items=1000000 overwrite=true

compose config -> reader (``data.reader``) -> protocol (``data.protocol``) -> atomic write
to ``data.processed_dir``. A processed directory built from the same source and protocol is
reused (``overwrite=true`` forces a rebuild); one built differently, or whose stats.json is
unreadable, is rebuilt. The source (``describe_source``) covers each raw file by size and
mtime and each raw directory (images, posters, videos, audio) by every file in it
(``data.media_fingerprint``: stat or content), so a replaced or added poster rebuilds it.

One build at a time: ``<processed_dir>.lock`` beside the directory is held while checking
and building; a second process waits (``lock_wait_s``; null = as long as it takes, then
``LockedError``), then finds the finished dataset and reuses it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from data_prep.protocol import apply_protocol
from data_prep.readers import ReadContext, read_raw
from recsys.atomic_io import atomic_path
from recsys.cache.file_fingerprint import (
    DEFAULT_MEDIA_FINGERPRINT,
    directory_fingerprint,
    file_fingerprint,
    media_fingerprint_of,
)
from recsys.cli import CONFIG_PATH, refusals_exit
from recsys.config.schema import check_config
from recsys.data.processed import ProcessedDataError, read_stats
from recsys.locking import exclusive

log = logging.getLogger(__name__)


def describe_source(reader: str, raw: Mapping, on_error: str, media: str = DEFAULT_MEDIA_FINGERPRINT) -> dict:
    """What a processed dataset depends on: reader, raw options, error policy, and for each
    path named in ``raw``: a file's absolute path, size and mtime; a directory's absolute
    path and ``directory_fingerprint(path, media)`` (every file below it, by stat or
    content). JSON-compatible."""
    files = {}
    for name, value in raw.items():
        if isinstance(value, str) and Path(value).exists():
            path = Path(value).absolute()
            files[name] = {"path": str(path)}
            if path.is_file():
                files[name].update(file_fingerprint(path, "stat"))
            elif path.is_dir():
                files[name].update(media_fingerprint=media, **directory_fingerprint(path, media))
    source = {"reader": reader, "on_error": on_error, "raw": dict(raw), "files": files}
    return json.loads(json.dumps(source))


def _existing_stats(processed_dir: Path) -> dict | None:
    """The stats.json of ``processed_dir``; None when it has none or it is unreadable (then
    the dataset is rebuilt, with a warning)."""
    try:
        return read_stats(processed_dir)
    except ProcessedDataError as err:
        log.warning("%s; rebuilding %s", err, processed_dir)
        return None


def _reusable(processed_dir: Path, source: dict, protocol: dict, overwrite: bool) -> bool:
    """Whether ``processed_dir`` already holds this source and protocol (raises
    FileExistsError for a directory that is not a processed dataset)."""
    stats_file = processed_dir / "stats.json"
    existing = _existing_stats(processed_dir)
    if existing is not None and not overwrite:
        if existing.get("source") == source and existing.get("protocol") == protocol:
            log.info("reusing %s (%s users, %s items, %s interactions; same source and "
                     "protocol; overwrite=true rebuilds)", processed_dir, existing.get("users"),
                     existing.get("items"), existing.get("interactions"))
            return True
        log.warning("%s was built from a different source or protocol; rebuilding",
                    processed_dir)
    elif not stats_file.exists() and processed_dir.exists() and any(processed_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{processed_dir} exists but holds no stats.json (not a processed dataset); "
                "remove it or pass overwrite=true"
            )
    return False


def prepare(data: Mapping, overwrite: bool = False, lock_wait_s: float | None = None) -> Path:
    """Build (or reuse) the processed dataset described by a ``conf/data/*.yaml`` mapping,
    holding ``<processed_dir>.lock`` (waiting up to ``lock_wait_s`` for another build).

    Returns:
        The absolute processed directory.
    """
    processed_dir = Path(data["processed_dir"]).absolute()
    protocol = {
        "min_interactions": int(data["protocol"]["min_interactions"]),
        "keep_last": data["protocol"]["keep_last"],
    }
    lock = processed_dir.with_name(f"{processed_dir.name}.lock")
    with exclusive(lock, f"processed dataset {processed_dir}", lock_wait_s):
        source = describe_source(data["reader"], data["raw"], data["on_error"], media_fingerprint_of(data))
        if _reusable(processed_dir, source, protocol, overwrite):
            return processed_dir
        with atomic_path(processed_dir) as staging:
            staging.mkdir()
            ctx = ReadContext(data["on_error"], staging_dir=staging, final_dir=processed_dir)
            raw = read_raw(data["reader"], data["raw"], ctx)
            dataset = apply_protocol(raw, **protocol, dataset=data["name"], source=source)
            dataset.validate(processed_dir)
            dataset.write_into(staging)
    stats = dataset.stats
    log.info("wrote %s: %d users, %d items, %d interactions; dropped %s; missing %s",
             processed_dir, stats["users"], stats["items"], stats["interactions"],
             stats["dropped"], stats["missing"])
    return processed_dir


def run(cfg: DictConfig) -> Path:
    """Prepare ``cfg.data`` (a composed ``conf/prep.yaml``, checked first); returns the
    processed dir."""
    check_config(cfg, "prep")
    data = OmegaConf.to_container(cfg.data, resolve=True)
    return prepare(data, overwrite=cfg.overwrite, lock_wait_s=cfg.lock_wait_s)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="prep")
@refusals_exit
def main(cfg: DictConfig) -> None:
    """Console script ``recsys-prep``."""
    run(cfg)


if __name__ == "__main__":
    main()
