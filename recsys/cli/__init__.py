"""Hydra entry points (console scripts recsys-cache, recsys-train, recsys-eval).

Hydra needs an absolute config directory: a relative ``config_path`` is looked up as a
Python package when the entry point runs as an installed console script.
"""

from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
