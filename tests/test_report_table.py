"""summarise and the markdown report on hand-made runs (no training)."""

import json
from pathlib import Path

import polars as pl
import pytest

from recsys.report.aggregate import COST_COLUMNS, RUN_SCHEMA, load_runs, summarise
from recsys.report.markdown import markdown_table, render_report
from recsys.report.plots import COSTS, save_pareto_plots
from recsys.report.tpme import TPMEWeights, tpme


def _run(method, seed, hr, ndcg, params=1000, s=2.0, mib=100.0, dataset="ds", status="complete", **extra):
    row = {
        "run_dir": f"{method}-{seed}",
        "status": status,
        "dataset": dataset,
        "method": method,
        "adapter": method.split("_")[0],
        "seed": seed,
        "test_hr@10": hr,
        "test_ndcg@10": ndcg,
        "trainable_params": params,
        "s_per_epoch": s,
        "s_per_step": None if s is None else s / 10,
        "steps_per_epoch": 10,
        "peak_memory_mib": mib,
        "memory_kind": "cuda_max_allocated",
        "val_eval_s": 0.5,
    }
    return row | extra


@pytest.fixture()
def runs() -> pl.DataFrame:
    rows = [
        _run("iisan", 0, 0.50, 0.30, params=3000, s=4.0, mib=300.0),
        _run("iisan", 1, 0.60, 0.34, params=3000, s=6.0, mib=500.0),
        _run("iisan", 2, 0.70, 0.32, params=3000, s=5.0, mib=400.0),
        _run("id", 0, 0.20, 0.10, params=1000, s=1.0, mib=100.0),
        _run("iisan_add", 0, 0.40, 0.20, params=2000, s=None, mib=200.0),
        _run("id", 0, 0.90, 0.90, dataset="other"),
        _run("iisan", 3, None, None, status="failed", error="RuntimeError: CUDA out of | memory"),
    ]
    return pl.DataFrame(rows, schema=RUN_SCHEMA)


def test_summarise_aggregates_complete_runs_per_dataset_and_method(runs):
    summary = summarise(runs)
    assert summary.select("dataset", "method").rows() == [
        ("ds", "iisan"),
        ("ds", "iisan_add"),
        ("ds", "id"),
        ("other", "id"),
    ]  # NDCG@10 best first
    iisan = summary.row(0, named=True)
    assert iisan["n_seeds"] == 3  # the failed seed is not aggregated
    assert iisan["hr@10_mean"] == pytest.approx(0.6) and iisan["hr@10_std"] == pytest.approx(0.1)
    assert iisan["ndcg@10_mean"] == pytest.approx(0.32) and iisan["ndcg@10_std"] == pytest.approx(0.02)
    assert iisan["s_per_epoch"] == 5.0 and iisan["peak_memory_mib"] == 400.0
    assert iisan["trainable_params"] == 3000 and iisan["memory_kind"] == "cuda_max_allocated"
    assert summary.row(2, named=True)["hr@10_std"] is None  # one seed: no std


def test_tpme_is_per_dataset_and_null_when_an_input_is_missing(runs):
    summary = summarise(runs)
    tpme = dict(zip(summary["method"] + "/" + summary["dataset"], summary["tpme"], strict=True))
    # ds without iisan_add (no s/epoch): t 5 vs 1, p 3000 vs 1000, m 400 vs 100 -> 1 and 0
    assert tpme["iisan/ds"] == pytest.approx(1.0) and tpme["id/ds"] == pytest.approx(0.0)
    assert tpme["iisan_add/ds"] is None
    assert tpme["id/other"] == 0.0  # alone in its set
    weighted = summarise(runs, TPMEWeights(0.0, 1.0, 0.0))
    assert weighted.filter(pl.col("method") == "iisan", pl.col("dataset") == "ds")["tpme"][0] == 1.0


def test_report_has_a_table_per_dataset_notes_and_failed_runs(runs):
    text = render_report(summarise(runs), runs, TPMEWeights(), "Sweep report: x")
    assert text.startswith("# Sweep report: x\n\n7 runs, 1 failed.")
    assert "## ds" in text and "## other" in text
    # columns: method, seeds, HR, NDCG, params, s/epoch, s/step, steps/epoch, memory, val pass, TPME
    assert (
        "| iisan | 3 | 0.6000 ± 0.1000 | 0.3200 ± 0.0200 | 3,000 | 5.00 | 0.500 | 10 | 400 | 0.50 | 1.000 |"
        in (text)
    )
    assert "| id | 1 | 0.2000 | 0.1000 | 1,000 | 1.00 | 0.100 | 10 | 100 | 0.50 | 0.000 |" in text
    assert "TPME not computed for iisan_add: missing s/epoch." in text
    assert "peak GPU memory allocated" in text
    assert "TPME memory: peak GPU memory allocated (every method has it)." in text
    assert "| method | train GFLOPs/seq | item MFLOPs/item | query MFLOPs | train mem (MiB) |" in text
    assert "| id | - | - | - | - | - | - | - | - | - |" in text  # no counted figures in these rows
    assert "## Failed runs (1)" in text and "RuntimeError: CUDA out of \\| memory" in text


def test_report_without_complete_runs(runs):
    failed = runs.filter(pl.col("status") == "failed")
    text = render_report(summarise(failed), failed, TPMEWeights(), "t")
    assert "No complete runs." in text and "## Failed runs (1)" in text


def test_markdown_table_alignment_and_missing_cells():
    assert markdown_table(["a", "b"], [["x", None]], "lr") == "| a | b |\n| --- | ---: |\n| x | - |"


def _costs(gflops=1.0, train_mib=50.0, p50=0.4):
    """The counted cost and latency columns of a run (FLOPs, MiB, ms)."""
    return {"train_flops_per_sequence": gflops * 1e9, "item_flops_per_item": 2e6, "query_flops": 3e6,
            "model_state_mib": train_mib / 2, "peak_activation_mib": train_mib / 4,
            "feature_mib": train_mib / 4, "train_memory_mib": train_mib,
            "query_p50_ms_b1": p50, "query_p99_ms_b1": 2 * p50,
            "query_p50_ms_b256": 10 * p50, "query_p99_ms_b256": 20 * p50}


def test_summarise_gives_per_method_medians_of_the_cost_columns():
    seeds = ((0, 1.0, 60.0, 0.2), (1, 3.0, 40.0, 0.6), (2, 2.0, 50.0, 0.4))
    runs = pl.DataFrame([_run("iisan", seed, 0.5, 0.3, **_costs(gflops=g, train_mib=m, p50=p))
                         for seed, g, m, p in seeds], schema=RUN_SCHEMA)
    row = summarise(runs).row(0, named=True)
    assert row == row | _costs(gflops=2.0, train_mib=50.0, p50=0.4) | {"n_seeds": 3}
    assert set(COST_COLUMNS) == set(_costs())


def test_tpme_uses_the_counted_memory_on_cpu_runs():
    cpu = {"memory_kind": "cpu_peak_rss"}
    # peak RSS says iisan is the lighter one; the counted memory says the opposite
    runs = pl.DataFrame([_run("iisan", 0, 0.5, 0.3, s=2.0, mib=900.0, **cpu, **_costs(train_mib=80.0)),
                         _run("id", 0, 0.2, 0.1, s=2.0, mib=1000.0, **cpu, **_costs(train_mib=20.0))],
                        schema=RUN_SCHEMA)
    summary = summarise(runs, TPMEWeights(0.0, 0.0, 1.0))
    assert summary["memory_source"].to_list() == ["counted", "counted"]
    assert summary["tpme_memory_mib"].to_list() == [80.0, 20.0]
    assert summary["peak_memory_mib"].to_list() == [900.0, 1000.0]  # still reported, apart
    assert summary["tpme"].to_list() == [1.0, 0.0]
    text = render_report(summary, runs, TPMEWeights(), "t")
    assert ("TPME memory: counted training memory (the cost table's train mem): no method has a "
            "peak GPU figure (a CPU sweep).") in text
    assert "| iisan | 1 | 2 | 3 | 80.0 | 40.0 | 20.0 | 20.0 | 0.40 / 0.80 | 4.00 / 8.00 |" in text


def test_a_set_mixing_gpu_and_cpu_memory_is_scored_on_counted_memory_for_all():
    cpu = {"memory_kind": "cpu_peak_rss"}
    runs = pl.DataFrame([_run("iisan", 0, 0.5, 0.3, mib=900.0, **_costs(train_mib=80.0)),  # GPU
                         _run("id", 0, 0.2, 0.1, mib=100.0, **cpu, **_costs(train_mib=20.0)),
                         _run("id", 0, 0.2, 0.1, mib=100.0, dataset="gpu_only", **_costs(train_mib=20.0))],
                        schema=RUN_SCHEMA)
    summary = summarise(runs)
    assert summary.select("dataset", "memory_source", "tpme_memory_mib").rows() == [
        ("ds", "counted", 80.0), ("ds", "counted", 20.0), ("gpu_only", "cuda_max_allocated", 100.0)]
    ds = summary.filter(pl.col("dataset") == "ds")
    assert ds["tpme"].to_list() == pytest.approx(tpme([2.0, 2.0], [1000, 1000], [80.0, 20.0]))
    text = render_report(summary, runs, TPMEWeights(), "t")
    assert "train mem) for every method: no peak GPU figure for id, and" in text


def test_counted_memory_missing_on_cpu_leaves_tpme_unscored(runs):
    cpu = runs.with_columns(memory_kind=pl.lit("cpu_peak_rss"))  # these rows carry no counted memory
    summary = summarise(cpu)
    assert summary["tpme"].is_null().all() and set(summary["memory_source"]) == {"counted"}
    text = render_report(summary, cpu, TPMEWeights(), "t")
    assert "TPME not computed for iisan_add: missing s/epoch, memory." in text


def _results(method, efficiency):
    return {"status": "complete", "dataset": "ds", "method": method, "adapter": method, "seed": 0,
            "metrics": {"test": {"hr@10": 0.5, "ndcg@10": 0.25}}, "error": None,
            "efficiency": {"trainable_params": 1000, "s_per_epoch": 2.0, "peak_train_memory_bytes": 2**30,
                           "memory_kind": "cpu_peak_rss"} | efficiency}


def test_old_and_new_results_json_load_side_by_side_and_every_plot_is_written(tmp_path: Path):
    counted = {"train_flops_per_sequence": 4e9, "item_flops_per_item": 1e6, "query_flops": 8e6,
               "model_state_bytes": 2**21, "peak_activation_bytes": 2**20, "feature_bytes": 2**20,
               "train_memory_bytes": 2**22, "query_p50_ms_b1": 0.5, "query_p99_ms_b1": 0.9,
               "query_p50_ms_b256": 3.0, "query_p99_ms_b256": 4.0}
    for name, efficiency in (("new", counted), ("old", {})):  # old: written before the counted costs
        (tmp_path / "sweep" / name).mkdir(parents=True)
        (tmp_path / "sweep" / name / "results.json").write_text(json.dumps(_results(name, efficiency)))
    runs = load_runs(tmp_path / "sweep")
    assert runs["status"].to_list() == ["complete", "complete"]
    new, old = runs.row(0, named=True), runs.row(1, named=True)
    assert all(old[c] is None for c in COST_COLUMNS)
    assert new["train_memory_mib"] == 4.0 and new["model_state_mib"] == 2.0 and new["feature_mib"] == 1.0
    assert new["train_flops_per_sequence"] == 4e9 and new["query_p99_ms_b256"] == 4.0
    summary = summarise(runs)
    text = render_report(summary, runs, TPMEWeights(), "t")
    assert "| new | 4 | 1 | 8 | 4.0 | 2.0 | 1.0 | 1.0 | 0.50 / 0.90 | 3.00 / 4.00 |" in text
    assert "| old | - | - | - | - | - | - | - | - | - |" in text
    paths = save_pareto_plots(summary, tmp_path)
    assert [p.name for p in paths] == [f"{stem}.png" for stem in COSTS] and "pareto_flops" in COSTS
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def _curve_runs() -> pl.DataFrame:
    """iisan and id on 25 %, 50 % (random users; iisan also recent users) and all of the data,
    two seeds each."""
    rows = []
    for method, scale in (("iisan", 1.0), ("id", 0.5)):
        for strategy in ("random_users", "recent") if method == "iisan" else ("random_users",):
            for fraction in (0.25, 0.5):
                rows += [_run(method, seed, 0.1, scale * fraction * (0.9 + 0.2 * seed),
                              train_fraction=fraction, train_strategy=strategy,
                              train_flops_total=fraction * 1e15) for seed in (0, 1)]
        rows += [_run(method, seed, 0.1, scale * (0.9 + 0.2 * seed), train_fraction=1.0,
                      train_flops_total=1e15) for seed in (0, 1)]
    return pl.DataFrame(rows, schema=RUN_SCHEMA)


def test_runs_on_shares_of_the_data_are_rows_of_a_learning_curve(tmp_path):
    from recsys.report.markdown import learning_curve_table
    from recsys.report.plots import _curves, learning_curve_figure

    summary = summarise(_curve_runs())
    assert summary.height == 8  # (iisan: 2 strategies x 2 shares + all; id: 2 shares + all), never mixed
    half = summary.filter((pl.col("method") == "iisan") & (pl.col("train_fraction") == 0.5)
                          & (pl.col("train_strategy") == "recent")).row(0, named=True)
    assert half["n_seeds"] == 2 and half["ndcg@10_mean"] == pytest.approx(0.5)
    assert half["train_flops_total"] == pytest.approx(5e14)

    curves = _curves(summary)
    assert sorted(curves) == ["id (random_users)", "iisan (random_users)", "iisan (recent)"]
    assert curves["iisan (recent)"]["train_fraction"].to_list() == [0.25, 0.5, 1.0]  # all data joins each
    assert curves["iisan (recent)"]["ndcg@10_mean"].to_list() == pytest.approx([0.25, 0.5, 1.0])

    table = learning_curve_table(summary)
    assert "| iisan | recent | 50% | 2 |" in table and "| iisan | all | 100% | 2 |" in table
    assert learning_curve_figure(summary) is not None
    report = render_report(summary, _curve_runs(), TPMEWeights(), "curve")
    assert "iisan @ 25% recent" in report and "Learning curve" in report
    paths = save_pareto_plots(summary, tmp_path)
    assert (tmp_path / "learning_curve.png") in paths and (tmp_path / "learning_curve.png").stat().st_size > 0


def test_a_sweep_on_all_the_data_has_no_learning_curve(runs, tmp_path):
    from recsys.report.markdown import learning_curve_table
    from recsys.report.plots import learning_curve_figure

    summary = summarise(runs)
    assert learning_curve_figure(summary) is None
    assert all(learning_curve_table(part) is None for part in summary.partition_by("dataset"))
    assert "learning_curve.png" not in {p.name for p in save_pareto_plots(summary, tmp_path)}


def test_a_distilled_students_teacher_cost_gets_its_own_column(tmp_path: Path):
    teacher = {"teacher_run": "/runs/teacher", "teacher_flops_per_step": 3e11,
               "teacher_flops_per_sequence": 3e9, "teacher_params": 5000, "teacher_model_state_bytes": 20000,
               "teacher_feature_bytes": 10}
    for name, efficiency in (("id_kd0.5", {"train_flops_per_sequence": 1e9} | teacher),
                             ("id", {"train_flops_per_sequence": 1e9})):
        (tmp_path / "sweep" / name).mkdir(parents=True)
        (tmp_path / "sweep" / name / "results.json").write_text(json.dumps(_results(name, efficiency)))
    runs = load_runs(tmp_path / "sweep")
    assert runs["teacher_flops_per_sequence"].to_list() == [None, 3e9]
    summary = summarise(runs)
    text = render_report(summary, runs, TPMEWeights(), "t")
    assert "| method | train GFLOPs/seq |" in text and "| teacher GFLOPs/seq |\n" in text
    assert "| id_kd0.5 | 1 |" in text and " | 3 |\n" in text and "per training sequence, on top of" in text
    plain = summary.filter(pl.col("method") == "id")
    assert "teacher" not in render_report(plain, runs.filter(pl.col("method") == "id"), TPMEWeights(), "t")
