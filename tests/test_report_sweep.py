"""recsys-report on a tiny real sweep: `recsys-train -m` over two methods x two seeds on
synthetic data (real MiniLM + EfficientNet-Lite0 caches), plus two failed jobs.

``tiny_sweep`` builds the sweep once per test session (tests/test_notebook.py reuses it).
"""

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from conftest import CPU_RUN, SMALL_SYNTHETIC, run_console_script

from recsys.cli.report import main
from recsys.report import TPMEWeights, load_runs, summarise, tpme
from recsys.report.aggregate import COST_COLUMNS, TEACHER_COLUMNS
from recsys.report.plots import COSTS

METHODS = ("iisan_intra", "id")
# group runs by adapter config, as conf/experiment/compare_methods.yaml does
SWEEP = [*SMALL_SYNTHETIC, "data.raw.n_users=120", *CPU_RUN, f"adapter={','.join(METHODS)}", "seed=0,1",
         "logger=csv"]
OOM = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"


def _add_failed_jobs(sweep: Path) -> None:
    """Job 4: failed with an error in results.json; job 5: killed before writing results.json."""
    results = json.loads((sweep / "0" / "results.json").read_text())
    results |= {"status": "failed", "metrics": {"val": None, "test": None}, "efficiency": {},
                "error": f"Traceback (most recent call last):\n  File \"x.py\", line 1\n{OOM}\n"}
    shutil.copytree(sweep / "0" / ".hydra", sweep / "4" / ".hydra")
    (sweep / "4" / "results.json").write_text(json.dumps(results))
    shutil.copytree(sweep / "2" / ".hydra", sweep / "5" / ".hydra")


def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sweep directory, built on first use in this session's temp dir."""
    root = tmp_path_factory.getbasetemp() / "report_sweep"
    sweep = root / "sweep"
    if not (root / "done").exists():
        args = ["-m", *SWEEP, f"paths.root_dir={root}", f"paths.data_dir={root / 'data'}",
                f"hydra.sweep.dir={sweep}"]
        run_console_script("recsys-train", args, root.parent)
        _add_failed_jobs(sweep)
        (root / "done").touch()
    return sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    return tiny_sweep(tmp_path_factory)


@pytest.mark.slow
def test_load_runs_finds_complete_failed_and_killed_jobs(sweep: Path):
    runs = load_runs(sweep)
    assert runs["run_dir"].to_list() == ["0", "1", "2", "3", "4", "5"]
    assert runs["status"].to_list() == ["complete"] * 4 + ["failed"] * 2
    assert runs["method"].to_list()[:4] == ["iisan_intra", "iisan_intra", "id", "id"]
    assert runs["adapter"].to_list()[:4] == ["iisan", "iisan", "id", "id"]
    assert runs["error"][4] == OOM
    killed = runs.row(5, named=True)
    assert killed["error"].startswith("no results.json") and killed["seed"] == 0
    assert killed["dataset"] == "synthetic" and killed["method"] == "id"  # from .hydra/hydra.yaml
    assert "adapter=id" in killed["overrides"] and "seed=0" in killed["overrides"]
    complete = runs.filter(pl.col("status") == "complete")
    nulls = complete.select(pl.all().exclude("error", "train_strategy", *TEACHER_COLUMNS).is_null().any()
                            ).row(0, named=True)
    assert not any(nulls.values()), nulls
    assert complete["train_fraction"].to_list() == [1.0] * 4  # all the data: no strategy


@pytest.mark.slow
def test_summary_matches_the_runs(sweep: Path):
    runs = load_runs(sweep)
    summary = summarise(runs)
    assert sorted(summary["method"]) == sorted(METHODS) and summary["n_seeds"].to_list() == [2, 2]
    for row in summary.iter_rows(named=True):
        mine = runs.filter(pl.col("method") == row["method"], pl.col("status") == "complete")
        assert row["ndcg@10_mean"] == pytest.approx(mine["test_ndcg@10"].mean())
        assert row["hr@10_std"] == pytest.approx(mine["test_hr@10"].std())
        assert row["s_per_epoch"] == pytest.approx(mine["s_per_epoch"].median())
        assert row["s_per_step"] == pytest.approx(mine["s_per_step"].median())
        assert row["steps_per_epoch"] == mine["steps_per_epoch"].min() > 0
        for column in COST_COLUMNS:
            assert row[column] == pytest.approx(mine[column].median())
    # CPU runs: TPME scores the counted training memory, not the peak RSS
    assert summary["memory_source"].to_list() == ["counted", "counted"]
    assert summary["tpme_memory_mib"].to_list() == summary["train_memory_mib"].to_list()
    assert summary["tpme"].to_list() == pytest.approx(tpme(
        summary["s_per_epoch"].to_list(), summary["trainable_params"].to_list(),
        summary["train_memory_mib"].to_list(), TPMEWeights()))
    params = dict(zip(summary["method"], summary["trainable_params"], strict=True))
    assert params["id"] < params["iisan_intra"]


@pytest.mark.slow
def test_cli_writes_report_files(sweep: Path, tmp_path: Path, capsys):
    main([str(sweep), "--out", str(tmp_path), "--weights", "0.4", "0.2", "0.4"])
    printed = capsys.readouterr().out
    report = (tmp_path / "report.md").read_text()
    assert printed == report
    header = "| method | seeds | HR@10 | NDCG@10 | trainable params | s/epoch | s/step | steps/epoch |"
    assert header in report
    assert "| method | train GFLOPs/seq | item MFLOPs/item | query MFLOPs | train mem (MiB) |" in report
    assert "TPME memory: counted training memory" in report
    assert "| iisan_intra | 2 |" in report and "| id | 2 |" in report
    assert "TPME = 0.4·t + 0.2·p + 0.4·m" in report
    assert "## Failed runs (2)" in report and OOM in report and "no results.json" in report
    assert "| 4 | synthetic | iisan_intra | 0 | adapter=iisan_intra seed=0 |" in report  # swept ones only
    csv = pl.read_csv(tmp_path / "report.csv")
    assert csv.height == 2 and {"method", "n_seeds", "ndcg@10_mean", "tpme", *COST_COLUMNS} <= {*csv.columns}
    for stem in COSTS:  # pareto_memory, pareto_time, pareto_flops
        assert (tmp_path / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.slow
def test_console_script_defaults_to_the_sweep_dir_and_rejects_bad_weights(sweep: Path, tmp_path: Path):
    target = tmp_path / "sweep"
    shutil.copytree(sweep, target, ignore=shutil.ignore_patterns("checkpoints", "csv"))
    proc = run_console_script("recsys-report", [target], tmp_path)
    assert (target / "report.md").read_text() == proc.stdout
    bad = run_console_script("recsys-report", [target, "--weights", "0.5", "0.5", "0.5"], tmp_path, expect=2)
    assert "sum to 1" in bad.stderr
