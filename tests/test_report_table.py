"""summarise and the markdown report on hand-made runs (no training)."""

import polars as pl
import pytest

from recsys.report.aggregate import RUN_SCHEMA, summarise
from recsys.report.markdown import markdown_table, render_report
from recsys.report.tpme import TPMEWeights


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
    assert "## Failed runs (1)" in text and "RuntimeError: CUDA out of \\| memory" in text


def test_report_without_complete_runs(runs):
    failed = runs.filter(pl.col("status") == "failed")
    text = render_report(summarise(failed), failed, TPMEWeights(), "t")
    assert "No complete runs." in text and "## Failed runs (1)" in text


def test_markdown_table_alignment_and_missing_cells():
    assert markdown_table(["a", "b"], [["x", None]], "lr") == "| a | b |\n| --- | ---: |\n| x | - |"
