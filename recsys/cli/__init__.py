"""Hydra entry points (console scripts recsys-prep, -cache, -train, -eval, -report, -export).

Hydra needs an absolute config directory: a relative ``config_path`` is looked up as a
Python package when the entry point runs as an installed console script.

Importing this package registers the OmegaConf resolvers the configs use:
``${join:${adapter.modalities}}`` -> ``"text+image+video"`` (e.g. in run labels).
"""

from pathlib import Path

from omegaconf import OmegaConf

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")

OmegaConf.register_new_resolver("join", lambda items, sep="+": sep.join(map(str, items)), replace=True)
