"""Sweeps at scale, run locally: a 3-trial Optuna search (hparams_search=optuna_iisan) and
a sweep through submitit's local executor (the SLURM launcher's code path), which a rerun
resumes by skipping the complete jobs."""

import json
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import optuna_trials  # noqa: E402

TINY = ["data.raw.n_users=80", "data.raw.n_items=40", "data.raw.n_clusters=4", "data.raw.max_length=12"]


def _results(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]


@pytest.mark.slow
def test_optuna_search_runs_three_trials_and_reports_the_best(tmp_path, run_cli, small_synthetic, cpu_run):
    sweep = tmp_path / "optuna"
    run_cli("recsys-train", ["-m", *small_synthetic, *TINY, *cpu_run, "encoder/image=none",
                             f"paths.data_dir={tmp_path / 'data'}", "hparams_search=optuna_iisan",
                             "hydra.sweeper.n_trials=3", "adapter.streams=intra", f"hydra.sweep.dir={sweep}"],
            tmp_path, timeout=900)
    runs = _results(sweep)
    assert len(runs) == 3 and all(r["status"] == "complete" for r in runs)
    assert all(r["config"]["eval"]["monitor"] == "val/ndcg@10" for r in runs)
    assert len({r["config"]["optimizer"]["lr"]["adapter"] for r in runs}) == 3  # the sampler varied it
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(r["metrics"]["val"]["ndcg@10"] for r in runs))

    keys, records = optuna_trials.trials(sweep)  # the search's record: one row per trial
    assert "optimizer.lr.adapter" in keys and [r["trial"] for r in records] == [0, 1, 2]
    assert sorted(r["objective"] for r in records) == sorted(r["metrics"]["val"]["ndcg@10"] for r in runs)
    table = optuna_trials.table(sweep)
    assert "3 trials, 3 complete" in table and "(best)" in table and "Sweeper's best" in table


@pytest.mark.slow
def test_submitit_sweep_is_resumable(tmp_path: Path, run_cli, small_synthetic, cpu_run, id_only):
    sweep = tmp_path / "submitit"
    args = ["-m", *small_synthetic, *TINY, *cpu_run, *id_only, f"paths.data_dir={tmp_path / 'data'}",
            "seed=0,1", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
            f"hydra.sweep.dir={sweep}"]
    run_cli("recsys-train", args, tmp_path, timeout=900)
    runs = _results(sweep)
    assert [r["seed"] for r in runs] == [0, 1] and all(r["status"] == "complete" for r in runs)
    assert list(sweep.glob(".submitit/*"))  # the jobs really went through submitit
    stamps = [p.stat().st_mtime_ns for p in sorted(sweep.glob("*/results.json"))]
    run_cli("recsys-train", args, tmp_path, timeout=900)  # the same sweep again: nothing reruns
    assert [p.stat().st_mtime_ns for p in sorted(sweep.glob("*/results.json"))] == stamps
