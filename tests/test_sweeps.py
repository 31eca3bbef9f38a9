"""Sweeps at scale, run locally: a 3-trial Optuna search (hparams_search=optuna_iisan) and
a sweep through submitit's local executor (the SLURM launcher's code path), which a rerun
resumes by skipping the complete jobs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent
TINY = [
    "data=synthetic",
    "data.raw.n_users=80",
    "data.raw.n_items=40",
    "data.raw.n_clusters=4",
    "data.raw.max_length=12",
    "encoder/image=none",
    "logger=none",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "cache.progress_bar=false",
]


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([str(BIN / "recsys-train"), "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"recsys-train failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _results(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]


@pytest.mark.slow
def test_optuna_search_runs_three_trials_and_reports_the_best(tmp_path: Path):
    sweep = tmp_path / "optuna"
    _train([*TINY, f"paths.data_dir={tmp_path / 'data'}", "hparams_search=optuna_iisan",
            "hydra.sweeper.n_trials=3", "adapter.streams=intra", f"hydra.sweep.dir={sweep}"], tmp_path)
    runs = _results(sweep)
    assert len(runs) == 3 and all(r["status"] == "complete" for r in runs)
    assert all(r["config"]["eval"]["monitor"] == "val/ndcg@10" for r in runs)
    assert len({r["config"]["optimizer"]["lr"]["adapter"] for r in runs}) == 3  # the sampler varied it
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(r["metrics"]["val"]["ndcg@10"] for r in runs))


@pytest.mark.slow
def test_submitit_sweep_is_resumable(tmp_path: Path):
    sweep = tmp_path / "submitit"
    args = [*TINY, f"paths.data_dir={tmp_path / 'data'}", "adapter=id", "seed=0,1",
            "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep}"]
    _train(args, tmp_path)
    runs = _results(sweep)
    assert [r["seed"] for r in runs] == [0, 1] and all(r["status"] == "complete" for r in runs)
    assert list(sweep.glob(".submitit/*"))  # the jobs really went through submitit
    stamps = [p.stat().st_mtime_ns for p in sorted(sweep.glob("*/results.json"))]
    _train(args, tmp_path)  # the same sweep again: both jobs are complete, nothing reruns
    assert [p.stat().st_mtime_ns for p in sorted(sweep.glob("*/results.json"))] == stamps
