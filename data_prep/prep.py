"""``recsys-prep``: raw dataset -> canonical processed dataset (Hydra entry point).

    recsys-prep data=scientific                      # conf/data/scientific.yaml
    recsys-prep data=synthetic data.raw.n_items=1000000 overwrite=true

compose config -> reader (``data.reader``) -> protocol (``data.protocol``) -> atomic write
to ``data.processed_dir``. A processed directory built from the same source and protocol is
reused (``overwrite=true`` forces a rebuild); one built differently is rebuilt.
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
from recsys.cli import CONFIG_PATH, config_errors_exit
from recsys.config.schema import check_config
from recsys.data.processed import read_stats

log = logging.getLogger(__name__)


def describe_source(reader: str, raw: Mapping, on_error: str) -> dict:
    """What a processed dataset depends on: reader, raw options, error policy, and the
    absolute path, size and mtime of each raw file named in ``raw``. JSON-compatible."""
    files = {}
    for name, value in raw.items():
        if isinstance(value, str) and Path(value).exists():
            path = Path(value).absolute()
            stat = path.stat()
            files[name] = {"path": str(path)}
            if path.is_file():
                files[name].update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    source = {"reader": reader, "on_error": on_error, "raw": dict(raw), "files": files}
    return json.loads(json.dumps(source))


def prepare(data: Mapping, overwrite: bool = False) -> Path:
    """Build (or reuse) the processed dataset described by a ``conf/data/*.yaml`` mapping.

    Returns:
        The absolute processed directory.
    """
    processed_dir = Path(data["processed_dir"]).absolute()
    protocol = {
        "min_interactions": int(data["protocol"]["min_interactions"]),
        "keep_last": data["protocol"]["keep_last"],
    }
    source = describe_source(data["reader"], data["raw"], data["on_error"])
    existing = read_stats(processed_dir)
    if existing is not None and not overwrite:
        if existing.get("source") == source and existing.get("protocol") == protocol:
            log.info("reusing %s (%d users, %d items, %d interactions; same source and "
                     "protocol; overwrite=true rebuilds)", processed_dir, existing["users"],
                     existing["items"], existing["interactions"])
            return processed_dir
        log.warning("%s was built from a different source or protocol; rebuilding",
                    processed_dir)
    elif existing is None and processed_dir.exists() and any(processed_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{processed_dir} exists but holds no stats.json (not a processed dataset); "
                "remove it or pass overwrite=true"
            )

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
    return prepare(OmegaConf.to_container(cfg.data, resolve=True), overwrite=cfg.overwrite)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="prep")
@config_errors_exit
def main(cfg: DictConfig) -> None:
    """Console script ``recsys-prep``."""
    run(cfg)


if __name__ == "__main__":
    main()
