"""Reporting over sweeps: results.json files -> per-method tables (effectiveness, timed and
counted cost), TPME, Pareto plots.

    runs = load_runs("multirun/compare_methods/<time>")   # one row per run (failed, unreadable included)
    summary = summarise(runs, DEFAULT_WEIGHTS)            # one row per (dataset, method)
    print(render_report(summary, runs, DEFAULT_WEIGHTS, "compare_methods"))
    save_pareto_plots(summary, out_dir)

The console script ``recsys-report`` (recsys.cli.report) writes all of it to a directory.
"""

from recsys.report.aggregate import (
    FLOPS,
    METRICS,
    failed_runs,
    find_run_dirs,
    load_runs,
    summarise,
    unreadable_runs,
)
from recsys.report.markdown import cost_table, render_report, summary_table
from recsys.report.plots import pareto_figure, pareto_figures, pareto_front, save_pareto_plots
from recsys.report.tpme import DEFAULT_WEIGHTS, TPMEWeights, min_max, tpme

__all__ = [
    "DEFAULT_WEIGHTS", "FLOPS", "METRICS", "TPMEWeights", "cost_table", "failed_runs", "find_run_dirs",
    "load_runs", "min_max", "pareto_figure", "pareto_figures", "pareto_front", "render_report",
    "save_pareto_plots", "summarise", "summary_table", "tpme", "unreadable_runs",
]
