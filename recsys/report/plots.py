"""Pareto plots: NDCG@10 (higher is better) against a cost (lower is better), per method.

One panel per dataset, one point per method with error bars over seeds (NDCG@10 std), the
Pareto front (methods no other method beats on both axes) highlighted and joined. Figures
are built with the object API on the Agg canvas (no pyplot, no global backend switch), so
this works headless and inside notebooks alike.

The costs (``COSTS``): the memory TPME used (peak GPU memory where every method of the dataset
has one, else the counted training memory; the panel's axis says which), time per epoch, and
the counted training FLOPs per sequence (log axis: methods differ by orders of magnitude).

The learning curve (``learning_curve_figure``, a data-efficiency sweep: several shares of the
training data, ``data.subsample``): per dataset, NDCG@10 against the share of the training data
and against the run's whole training FLOPs (``train_flops_total``), one line per method and
subsampling strategy (the whole-set point joins every strategy's line).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from recsys.atomic_io import atomic_path
from recsys.report.aggregate import MEMORY_SOURCES, set_name

# file stem -> (summary column on the x axis, axis label, log x axis); "{memory}" in a label
# is the panel's memory_source in words
COSTS = {
    "pareto_memory": ("tpme_memory_mib", "{memory} (MiB)", False),
    "pareto_time": ("s_per_epoch", "training time per epoch (s)", False),
    "pareto_flops": ("train_flops_per_sequence", "training FLOPs per sequence (fwd + bwd)", True),
}
QUALITY = "ndcg@10"


def pareto_front(costs: Sequence[float], qualities: Sequence[float]) -> list[bool]:
    """Mask of the points not dominated by another (cost <= and quality >=, one strictly)."""
    points = list(zip(costs, qualities, strict=True))
    return [
        not any(c2 <= c and q2 >= q and (c2 < c or q2 > q) for c2, q2 in points)
        for c, q in points
    ]


def _panel(ax, part: pl.DataFrame, cost: str, cost_label: str, log_x: bool) -> None:
    data = part.filter(pl.col(cost).is_not_null() & pl.col(f"{QUALITY}_mean").is_not_null())
    x = data[cost].to_list()
    y = data[f"{QUALITY}_mean"].to_list()
    err = data[f"{QUALITY}_std"].fill_null(0.0).to_list()
    front = pareto_front(x, y)
    names = [set_name(row) for row in data.iter_rows(named=True)]
    for xi, yi, ei, name, on_front in zip(x, y, err, names, front, strict=True):
        ax.errorbar(xi, yi, yerr=ei, fmt="o", capsize=3, color="tab:red" if on_front else "tab:gray",
                    markersize=7 if on_front else 5)
        ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if any(front):
        fx, fy = zip(*sorted((xi, yi) for xi, yi, f in zip(x, y, front, strict=True) if f), strict=True)
        ax.step(fx, fy, where="post", color="tab:red", alpha=0.6, label="Pareto front")
        ax.legend(loc="lower right", fontsize=8)
    if log_x:
        ax.set_xscale("log")
    source = part["memory_source"][0] if part.height else None
    ax.set_xlabel(cost_label.format(memory=MEMORY_SOURCES.get(source, "memory")))
    ax.set_ylabel(f"test {QUALITY.upper()} (mean ± std over seeds)")
    ax.set_title(part["dataset"][0] if part.height else "no complete runs")
    ax.grid(alpha=0.3)


def pareto_figure(summary: pl.DataFrame, cost: str, cost_label: str, log_x: bool = False) -> Figure:
    """NDCG@10 vs ``cost`` (a ``summarise`` column), one panel per dataset; "{memory}" in
    ``cost_label`` becomes what the panel's ``memory_source`` is."""
    parts = summary.partition_by("dataset", maintain_order=True) or [summary]
    fig = Figure(figsize=(5.5 * len(parts), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(parts), squeeze=False)[0]
    for ax, part in zip(axes, parts, strict=True):
        _panel(ax, part, cost, cost_label, log_x)
    return fig


def pareto_figures(summary: pl.DataFrame) -> dict[str, Figure]:
    """Every plot of the report: file stem (``COSTS`` key) -> figure."""
    return {stem: pareto_figure(summary, *cost) for stem, cost in COSTS.items()}


def _curves(part: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """One dataset's rows as learning curves: "method (strategy)" -> its rows by fraction; the
    whole-set row of a method belongs to each of its strategies' curves."""
    curves = {}
    for (method,), rows in part.partition_by("method", as_dict=True, maintain_order=True).items():
        whole = rows.filter(pl.col("train_strategy").is_null())
        strategies = rows["train_strategy"].drop_nulls().unique(maintain_order=True).to_list()
        for strategy in strategies or [None]:
            subset = rows.filter(pl.col("train_strategy") == strategy) if strategy else whole.head(0)
            curves[f"{method} ({strategy})" if strategy else method] = pl.concat([subset, whole]).sort(
                "train_fraction")
    return curves


def learning_curve_figure(summary: pl.DataFrame) -> Figure | None:
    """NDCG@10 against the share of training data (left) and the whole training FLOPs (right,
    log axis), a row of panels per dataset with several shares; None when there is none."""
    parts = [part for part in summary.partition_by("dataset", maintain_order=True)
             if part["train_fraction"].n_unique() > 1]
    if not parts:
        return None
    fig = Figure(figsize=(11, 4.2 * len(parts)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(parts), 2, squeeze=False)
    for (by_share, by_flops), part in zip(axes, parts, strict=True):
        for name, rows in _curves(part).items():
            y, err = rows[f"{QUALITY}_mean"].to_list(), rows[f"{QUALITY}_std"].fill_null(0.0).to_list()
            line = by_share.errorbar([100 * f for f in rows["train_fraction"]], y, yerr=err, marker="o",
                                     capsize=3, label=name)
            flops = rows.filter(pl.col("train_flops_total").is_not_null())
            by_flops.errorbar(flops["train_flops_total"].to_list(), flops[f"{QUALITY}_mean"].to_list(),
                              yerr=flops[f"{QUALITY}_std"].fill_null(0.0).to_list(), marker="o", capsize=3,
                              color=line[0].get_color(), label=name)
        by_flops.set_xscale("log")
        by_share.set_xlabel("share of the training data (%)")
        by_flops.set_xlabel("training FLOPs, all epochs (counted)")
        for ax in (by_share, by_flops):
            ax.set_ylabel(f"test {QUALITY.upper()} (mean ± std over seeds)")
            ax.set_title(f"{part['dataset'][0]}: learning curve")
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right", fontsize=8)
    return fig


def save_pareto_plots(summary: pl.DataFrame, out_dir: str | Path, dpi: int = 120) -> list[Path]:
    """Write ``<out_dir>/<stem>.png`` for each of ``COSTS`` (pareto_memory, pareto_time,
    pareto_flops), and ``learning_curve.png`` when the sweep trained on several shares of the
    data, atomically; returns the paths."""
    paths = []
    figures = pareto_figures(summary)
    if (curve := learning_curve_figure(summary)) is not None:
        figures["learning_curve"] = curve
    for stem, fig in figures.items():
        path = Path(out_dir) / f"{stem}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi)
        paths.append(path)
    return paths
