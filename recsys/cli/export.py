"""recsys-export: write a trained run's item embeddings and user encoder for top-k serving.

    recsys-export run_dir=outputs/train/2026-11-23_12-00-00
    recsys-export run_dir=... checkpoint=last out_dir=exports/ml_iisan
    recsys-export run_dir=... embeddings=int8 'index={kind: hnsw, M: 32, ef_search: 128}'
    recsys-export run_dir=... embeddings=binary candidates=200
    python -m recsys.serving.topk exports/ml_iisan 50 181 258 --k 5

See recsys/serving/export.py for what is written.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from recsys.cli import CONFIG_PATH, refusals_exit
from recsys.config.schema import check_config
from recsys.serving.export import export_run


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
@refusals_exit
def main(cfg: DictConfig) -> None:
    """Hydra entry point of ``recsys-export``."""
    check_config(cfg, "export")
    index = OmegaConf.to_container(cfg.index, resolve=True) if cfg.index is not None else None
    out = export_run(cfg.run_dir, cfg.out_dir, cfg.checkpoint, cfg.on_changed_inputs,
                     cfg.embeddings, index, cfg.candidates)
    print(f"[recsys-export] {cfg.run_dir} ({cfg.checkpoint}) -> {out}")
