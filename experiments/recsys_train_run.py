"""What the comparison scripts (``peer_recbole.py``, ``ablate_recipe.py``) share: one
``recsys-train`` run launched as a user would, and the mean ± std they report over seeds.

One launcher keeps the command line identical across scripts, so a run one script trained
is found complete (``skip_complete``) and reused by the other.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path


def train_run(data: str, seed: int, overrides: list[str], run_dir: Path) -> dict:
    """``recsys-train data=<data> seed=<seed> <overrides>`` in ``run_dir`` (CSV logger, W&B off,
    output in ``<run_dir>.log``); reused when complete there. Returns its results.json."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    args = [f"data={data}", f"seed={seed}", *overrides, "logger=csv", "cache.progress_bar=false",
            f"hydra.run.dir={run_dir}"]
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        subprocess.run([str(Path(sys.executable).parent / "recsys-train"), *args], check=True, stdout=log,
                       stderr=subprocess.STDOUT, env=os.environ | {"WANDB_MODE": "disabled"})
    return json.loads((run_dir / "results.json").read_text())


def mean_std(values: list[float]) -> list[float]:
    """[mean, sample std] over seeds; std 0 for one seed."""
    return [statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0]
