"""Faults of recsys-report and of serving (issue 10), on hand-made run directories and a
hand-made export (no training).

Report: the Hydra log directories recsys-eval / recsys-export write inside a run, and the
run's export/, are not runs; a truncated results.json (or saved Hydra config) is an
unreadable run, reported with the file and the parse error, counted apart from the failed
ones, and the report of the others is still written.

Serving: a history covering the whole catalogue answers nothing and says why; fewer
candidates than k answers what there is and says so; keys are stripped of surrounding
whitespace; an empty key is an error naming its position.
"""

import json
from pathlib import Path

import polars as pl
import pytest
import test_serving
import yaml

from recsys.cli import compose
from recsys.cli.report import main as report_main
from recsys.report import find_run_dirs, load_runs
from recsys.report.aggregate import RUN_LOG_DIRS
from recsys.serving.topk import ExportedRecommender
from recsys.serving.topk import main as serve_main

export_dir = test_serving.export_dir  # the hand-made export: N items k1..kN
N = test_serving.N
KEYS = [f"k{i}" for i in range(1, N + 1)]


def _hydra_dir(job_dir: Path, job_name: str, overrides: list[str]) -> None:
    """The .hydra/ Hydra saves in a job's output directory."""
    hydra = job_dir / ".hydra"
    hydra.mkdir(parents=True)
    config = {"data": {"name": "synthetic"}, "adapter": {"name": "id"}, "seed": 0}
    (hydra / "config.yaml").write_text(yaml.safe_dump(config))
    choices = {"adapter": "id"} if job_name == "train" else {}
    (hydra / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"name": job_name},
                                                                "runtime": {"choices": choices}}}))
    (hydra / "overrides.yaml").write_text(yaml.safe_dump(overrides))


def _training_job(job_dir: Path, seed: int, results: bool = True) -> None:
    """A recsys-train job directory: .hydra/ and, unless killed, a complete results.json."""
    _hydra_dir(job_dir, "train", ["adapter=id", f"seed={seed}"])
    if results:
        (job_dir / "results.json").write_text(json.dumps({
            "status": "complete", "dataset": "synthetic", "method": "id", "adapter": "id", "seed": seed,
            "metrics": {"test": {"hr@10": 0.5, "ndcg@10": 0.25}},
            "efficiency": {"trainable_params": 1000, "s_per_epoch": 2.0, "s_per_step": 0.2,
                           "steps_per_epoch": 10, "peak_train_memory_bytes": 2**20,
                           "memory_kind": "cpu_peak_rss", "val_eval_s": 0.1},
            "error": None,
        }))


def _eval_and_export_leftovers(run_dir: Path) -> None:
    """What recsys-eval and recsys-export (out_dir default) leave in a run directory."""
    for log_dir, job_name in (("eval_logs", "evaluate"), ("export_logs", "export")):
        for time in ("2026-01-01_10-00-00", "2026-01-01_11-00-00"):
            _hydra_dir(run_dir / log_dir / time, job_name, [f"run_dir={run_dir}"])
            (run_dir / log_dir / time / f"{job_name}.log").write_text("done\n")
    (run_dir / "eval.json").write_text("{}")
    (run_dir / "export").mkdir()
    (run_dir / "export" / "export.json").write_text(json.dumps({"format_version": 2}))


def test_eval_and_export_logs_and_the_export_are_not_runs(tmp_path: Path, capsys):
    sweep = tmp_path / "sweep"
    _training_job(sweep / "0", seed=0)
    _eval_and_export_leftovers(sweep / "0")
    _training_job(sweep / "1", seed=1, results=False)  # killed, then re-evaluated from .hydra/
    _eval_and_export_leftovers(sweep / "1")
    report_main([str(sweep), "--out", str(tmp_path)])
    assert capsys.readouterr().out.startswith(f"# Sweep report: {sweep}\n\n2 runs, 1 failed.\n")
    assert load_runs(sweep)["status"].to_list() == ["complete", "failed"]
    assert find_run_dirs(sweep) == [sweep / "0", sweep / "1"]
    # A one-run "sweep" (the run directory itself) is that run alone.
    report_main([str(sweep / "0"), "--out", str(tmp_path)])
    assert "\n1 runs, 0 failed.\n" in capsys.readouterr().out
    assert load_runs(sweep / "0")["run_dir"].to_list() == ["."]


def test_run_log_dirs_are_where_eval_and_export_write_their_hydra_logs(tmp_path: Path):
    """RUN_LOG_DIRS follows hydra.run.dir of conf/eval.yaml and conf/export.yaml."""
    log_dirs = [Path(compose(name, [f"run_dir={tmp_path}"], return_hydra_config=True).hydra.run.dir)
                for name in ("eval", "export")]
    assert all(log_dir.parent.parent == tmp_path for log_dir in log_dirs)
    assert sorted(log_dir.parent.name for log_dir in log_dirs) == sorted(RUN_LOG_DIRS)


def test_unreadable_runs_are_reported_apart_and_the_others_still_are(tmp_path: Path, capsys):
    sweep = tmp_path / "sweep"
    for seed in range(4):
        _training_job(sweep / str(seed), seed=seed)
    truncated = (sweep / "1" / "results.json").read_text()[:57]
    (sweep / "1" / "results.json").write_text(truncated)
    (sweep / "2" / "results.json").write_text("[1, 2]")
    (sweep / "3" / "results.json").unlink()  # killed, and its saved config cut short
    (sweep / "3" / ".hydra" / "config.yaml").write_text("data: {name: synth")
    _training_job(sweep / "4", seed=4)
    failed_results = {"status": "failed", "dataset": "synthetic", "method": "id", "seed": 4,
                      "error": "Traceback (most recent call last):\nRuntimeError: boom"}
    (sweep / "4" / "results.json").write_text(json.dumps(failed_results))
    with pytest.raises(json.JSONDecodeError) as parse_error:
        json.loads(truncated)

    report_main([str(sweep), "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert printed == (tmp_path / "report.md").read_text()
    assert "\n5 runs, 1 failed, 3 unreadable.\n" in printed
    assert "| id | 1 | 0.5000 | 0.2500 |" in printed  # job 0 alone is aggregated
    failed, unreadable = printed.split("## Failed runs (1)")[1].split("## Unreadable runs (3)")
    assert "| 4 | synthetic | id | 4 | seed=4 | RuntimeError: boom |" in failed and "| 1 |" not in failed
    assert f"| 1 | results.json: {parse_error.value} |" in unreadable
    assert "| 2 | results.json: the file is a JSON array, not an object |" in unreadable
    assert "| 3 | .hydra/config.yaml: expected ',' or '}', but got '<stream end>' (line 1, column 19) |" \
        in unreadable
    assert pl.read_csv(tmp_path / "report.csv")["n_seeds"].to_list() == [1]
    runs = load_runs(sweep)
    assert runs["status"].to_list() == ["complete", "unreadable", "unreadable", "unreadable", "failed"]


def test_a_history_covering_the_catalogue_answers_nothing_and_says_why(export_dir, capsys):
    path, *_ = export_dir
    answer = ExportedRecommender.load(path).recommend(KEYS, k=5)
    reason = f"no items left to recommend: all {N} catalogue items are in the history"
    assert answer.items == [] and answer.scores == [] and answer.shortfall == reason
    with pytest.raises(SystemExit) as exit_status:
        serve_main([str(path), *KEYS, "--k", "5"])
    out, err = capsys.readouterr()
    assert exit_status.value.code == 1 and reason in err and out == ""


def test_fewer_candidates_than_k_returns_them_all_and_says_so(export_dir, capsys):
    path, *_ = export_dir
    rec = ExportedRecommender.load(path)
    answer = rec.recommend(KEYS[3:], k=10)
    assert sorted(answer.items) == KEYS[:3] and len(answer.scores) == 3
    assert answer.scores == sorted(answer.scores, reverse=True)
    assert answer.shortfall == (f"3 items to recommend, not 10: {N} items in the catalogue, "
                                f"{N - 3} of them in the history")
    kept = rec.recommend(["k1"], k=N + 5, exclude_history=False)
    assert len(kept.items) == N
    assert kept.shortfall == f"{N} items to recommend, not {N + 5}: {N} items in the catalogue"
    assert rec.recommend(KEYS[1:], k=1).shortfall is None  # exactly k candidates
    with pytest.raises(ValueError, match="k must be at least 1"):
        rec.recommend(["k1"], k=0)
    serve_main([str(path), *KEYS[3:], "--k", "10"])
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3 and "3 items to recommend, not 10" in err


def test_keys_are_stripped_and_an_empty_key_names_its_position(export_dir, capsys):
    path, *_ = export_dir
    rec = ExportedRecommender.load(path)
    spaced = rec.recommend([" k3", "k7 ", "\tk1\n", 12], k=4)
    assert spaced.unknown == ["12"]
    assert spaced == rec.recommend(["k3", "k7", "k1", "12"], k=4)
    with pytest.raises(ValueError, match=r"empty item key at position 2, 4 of the history \(4 keys\)"):
        rec.recommend(["k1", "  ", "k2", ""])
    serve_main([str(path), " k3", "k7 ", "--k", "2"])
    out, _ = capsys.readouterr()
    assert "unknown" not in out and len(out.splitlines()) == 2
    with pytest.raises(SystemExit) as exit_status:
        serve_main([str(path), "k3", " "])
    assert exit_status.value.code == 2 and "empty item key at position 2" in capsys.readouterr().err
