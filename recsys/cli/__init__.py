"""Hydra entry points (console scripts recsys-prep, -cache, -train, -eval, -report, -export).

The configs ship inside the package (``conf/`` installs as ``recsys.conf``), so every entry
point reads them from ``pkg://recsys.conf`` whether recsys is installed from a wheel or in
editable mode; ``compose`` composes one the same way (tests, notebooks, benchmarks).

Every entry point checks its composed config against the schema (``recsys.config.schema``)
before any work; ``refusals_exit`` turns a ``ConfigError`` (the message names every bad
key) or any other refusal (``recsys.errors.Refused``: a busy or foreign run directory, a
changed checkpoint or dataset, ...) into its message on stderr and exit status 2, no traceback.

Importing this package registers the OmegaConf resolvers the configs use:
- ``${join:${adapter.modalities}}`` -> ``"text+image+video"`` (run labels);
- ``${cache_dir:<float16 dir>,${.dtype}}`` -> that directory for float16 caches, else
  ``<float16 dir>/<dtype>`` (``cache.dir``: recsys.cache.manifest.dtype_dir);
- ``${adapter_options:}`` -> every option of the ``adapter`` config group, comma separated
  (the method sweep of ``experiment=compare_methods``, derived from what is there);
- ``${stable_id:${paths.output_dir}}`` -> a 16-hex-digit id of a run directory (the W&B run
  id, so a resumed run continues its W&B run);
- ``${run_logs:${run_dir},eval_logs}`` -> ``<run_dir>/eval_logs`` when ``run_dir`` is a
  directory, else a folder under the system temp dir: Hydra creates the log directory before
  the entry point can check ``run_dir``, and a mistyped one must not be created;
- ``${config_packages:}`` -> ``pkg://<package>`` for every entry point of the group
  ``recsys.configs``: installed plugins' config trees join the search path
  (``hydra.searchpath`` of train.yaml and cache.yaml), so their ``adapter/<name>.yaml`` etc. are
  options like the built-in ones.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from recsys.cache.manifest import dtype_dir
from recsys.config.schema import ConfigError
from recsys.errors import Refused

CONFIG_MODULE = "recsys.conf"
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"


def _adapter_options() -> str:
    """Every option of the ``adapter`` group on train.yaml's search path, plugins' included
    (Hydra's own listing)."""
    hydra = GlobalHydra.instance()
    if hydra.is_initialized():
        return ",".join(sorted(hydra.config_loader().get_group_options("adapter", config_name="train")))
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return _adapter_options()


def _config_packages() -> list[str]:
    return [f"pkg://{entry.value}" for entry in importlib.metadata.entry_points(group="recsys.configs")]


def _run_logs(run_dir: str, name: str) -> str:
    if Path(run_dir).is_dir():
        return str(Path(run_dir) / name)
    return str(Path(tempfile.gettempdir()) / "recsys" / name)


OmegaConf.register_new_resolver("config_packages", _config_packages, replace=True)
OmegaConf.register_new_resolver("run_logs", _run_logs, replace=True)
OmegaConf.register_new_resolver("cache_dir", dtype_dir, replace=True)
OmegaConf.register_new_resolver("join", lambda items, sep="+": sep.join(map(str, items)), replace=True)
OmegaConf.register_new_resolver("adapter_options", _adapter_options, replace=True)
OmegaConf.register_new_resolver(
    "stable_id", lambda text: hashlib.sha256(str(text).encode()).hexdigest()[:16], replace=True
)


def compose(config_name: str, overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with ``overrides`` as the console scripts do."""
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def refusals_exit(main: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Wrap a Hydra task function: a ``ConfigError`` or ``Refused`` prints its message and
    exits with 2."""

    @functools.wraps(main)
    def run(cfg: DictConfig) -> Any:
        try:
            return main(cfg)
        except (ConfigError, Refused) as err:
            print(f"{sys.argv[0].rsplit('/', 1)[-1]}: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return run
