"""The sweep report as markdown: per dataset a table of effectiveness and timed efficiency
with TPME, its notes (which memory TPME used among them), and a table of counted cost and
query latency; then the failed and unreadable runs.

    ## synthetic
    | method | seeds | HR@10 | NDCG@10 | trainable params | s/epoch | ... | peak mem (MiB) | TPME |
    ...
    - notes
    | method | train GFLOPs/seq | item MFLOPs/item | query MFLOPs | train mem (MiB) | ... |
    ...
    - what the cost columns are
    | method | strategy | train data | seeds | HR@10 | NDCG@10 | training PFLOPs | s/epoch |
    ...                       (a data-efficiency sweep only: several shares of the training data)
    ## Failed runs (1)
    | run_dir | dataset | method | seed | overrides | error |
    ## Unreadable runs (1)
    | run_dir | error |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import polars as pl

from recsys.report.aggregate import (
    HAS_GPU_PEAK,
    MEMORY_SOURCES,
    METRICS,
    failed_runs,
    set_name,
    unreadable_runs,
)
from recsys.report.tpme import TPMEWeights
from recsys.train.results import LATENCY_BATCH_SIZES, latency_cell

_MEMORY_KINDS = {  # EfficiencyCallback's memory_kind -> what the peak mem figure is
    "cuda_max_allocated": MEMORY_SOURCES["cuda_max_allocated"],
    "cpu_peak_rss": "peak process RSS while training (CPU; reset per phase on Linux, but it includes "
                    "the libraries and whatever earlier jobs of the process left allocated, so it "
                    "separates methods far less than GPU memory does, and TPME does not use it)",
}
_TPME_INPUTS = {"s_per_epoch": "s/epoch", "trainable_params": "trainable params", "tpme_memory_mib": "memory"}
_COST_NOTE = (
    "Cost, counted (recsys.train.cost; the same on any machine), median over seeds: FLOPs of matrix "
    "products, convolutions and attention per training sequence (forward + backward), per item through "
    "the item tower, per user query (user encoder + full ranking); train mem = model state (parameters, "
    "gradients, optimiser state) + activations saved for backward in one step + resident item features. "
    "Query latency: user encoder + exact top-10, measured on the run's machine, p50 / p99 ms per batch size. "
    "'-': not recorded (results.json from before these figures existed)."
)


def _cell(value: Any) -> str:
    """A table cell: '-' for missing, pipes escaped, one line."""
    if value is None:
        return "-"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _col(column: str, spec: str, scale: float | None = None) -> Callable[[dict[str, Any]], str]:
    """A cell of a summary row: ``row[column]`` (divided by ``scale`` if given) formatted by
    ``spec``, '-' when missing."""
    def cell(row: dict[str, Any]) -> str:
        value = row[column]
        return "-" if value is None else format(value if scale is None else value / scale, spec)
    return cell


def _mean_std(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str) -> str:
    """A GitHub markdown table; ``align`` has one 'l' or 'r' per column."""
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = [header, rule, *[[_cell(v) for v in row] for row in rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


_Columns = list[tuple[str, Callable[[dict[str, Any]], str]]]

_COLUMNS: _Columns = [
    ("method", set_name),
    ("seeds", lambda r: str(r["n_seeds"])),
    *[(m.upper(), lambda r, m=m: _mean_std(r[f"{m}_mean"], r[f"{m}_std"])) for m in METRICS],
    ("trainable params", _col("trainable_params", ",")),
    ("s/epoch", _col("s_per_epoch", ".2f")),
    ("s/step", _col("s_per_step", ".3f")),
    ("steps/epoch", _col("steps_per_epoch", "d")),
    ("peak mem (MiB)", _col("peak_memory_mib", ".0f")),
    ("val pass (s)", _col("val_eval_s", ".2f")),
    ("TPME", _col("tpme", ".3f")),
]
_COST_COLUMNS: _Columns = [
    ("method", set_name),
    ("train GFLOPs/seq", _col("train_flops_per_sequence", ".4g", 1e9)),
    ("item MFLOPs/item", _col("item_flops_per_item", ".4g", 1e6)),
    ("query MFLOPs", _col("query_flops", ".4g", 1e6)),
    ("train mem (MiB)", _col("train_memory_mib", ".1f")),
    ("model state (MiB)", _col("model_state_mib", ".1f")),
    ("activations (MiB)", _col("peak_activation_mib", ".1f")),
    ("features (MiB)", _col("feature_mib", ".1f")),
    *[(f"query b{size} p50 / p99 (ms)", lambda r, size=size: latency_cell(r, size))
      for size in LATENCY_BATCH_SIZES],
]


#: Shown in a dataset's cost table when one of its methods was distilled from a teacher.
_TEACHER_COLUMN = ("teacher GFLOPs/seq", _col("teacher_flops_per_sequence", ".4g", 1e9))
_TEACHER_NOTE = ("teacher GFLOPs/seq: a distilled student's teacher scoring its candidates (forward only), "
                 "per training sequence, on top of the student's own train GFLOPs/seq.")


def _has_teacher(summary: pl.DataFrame) -> bool:
    return summary["teacher_flops_per_sequence"].is_not_null().any()


def _table(summary: pl.DataFrame, columns: _Columns) -> str:
    rows = [[fmt(r) for _, fmt in columns] for r in summary.iter_rows(named=True)]
    return markdown_table([name for name, _ in columns], rows, "l" + "r" * (len(columns) - 1))


def summary_table(summary: pl.DataFrame) -> str:
    """The methods of ``summary`` (rows of one dataset) as a markdown table: test metrics,
    timed efficiency, TPME."""
    return _table(summary, _COLUMNS)


def cost_table(summary: pl.DataFrame) -> str:
    """The counted cost and query latency of the methods of ``summary`` (rows of one dataset)
    as a markdown table (see ``_COST_NOTE``), with the teachers' FLOPs when one was distilled."""
    return _table(summary, _COST_COLUMNS + ([_TEACHER_COLUMN] if _has_teacher(summary) else []))


_CURVE_COLUMNS: _Columns = [
    ("method", lambda r: r["method"]),
    ("strategy", lambda r: r["train_strategy"] or "all"),
    ("train data", lambda r: f"{r['train_fraction']:.0%}"),
    ("seeds", lambda r: str(r["n_seeds"])),
    *[(m.upper(), lambda r, m=m: _mean_std(r[f"{m}_mean"], r[f"{m}_std"])) for m in METRICS],
    ("training PFLOPs (all epochs)", _col("train_flops_total", ".4g", 1e15)),
    ("s/epoch", _col("s_per_epoch", ".2f")),
]
_CURVE_NOTE = (
    "Learning curve: the same methods trained on a fraction of the training data (data.subsample; "
    "validation and test are the full sets). Training PFLOPs: counted FLOPs per sequence x the "
    "training rows kept x epochs trained, median over seeds."
)


def learning_curve_table(summary: pl.DataFrame) -> str | None:
    """The rows of ``summary`` (one dataset) as quality against the share of training data,
    by method and strategy (the whole set joining every strategy); None when every row saw one
    share of the data."""
    if summary["train_fraction"].n_unique() < 2:
        return None
    rows = summary.sort("method", "train_strategy", "train_fraction", nulls_last=True)
    return _table(rows, _CURVE_COLUMNS)


def _notes(summary: pl.DataFrame, weights: TPMEWeights) -> list[str]:
    kinds = {k for joined in summary["memory_kind"].drop_nulls() for k in joined.split("+")}
    notes = [
        f"{' / '.join(m.upper() for m in METRICS)}: test, mean ± std over seeds. s/epoch: median over seeds. "
        f"peak mem: {', '.join(_MEMORY_KINDS.get(k, k) for k in sorted(kinds)) or 'unknown'}.",
        f"TPME = {weights} over min-max normalised time, params, memory of this table's "
        "methods; lower is better; comparable within this table only.",
        _tpme_memory_note(summary),
    ]
    for r in summary.filter(pl.col("tpme").is_null()).iter_rows(named=True):
        missing = ", ".join(label for col, label in _TPME_INPUTS.items() if r[col] is None)
        notes.append(f"TPME not computed for {r['method']}: missing {missing}.")
    return notes


def _tpme_memory_note(summary: pl.DataFrame) -> str:
    """Which memory TPME used for this dataset's methods, and for the counted one, why."""
    source = summary["memory_source"][0]
    note = f"TPME memory: {MEMORY_SOURCES[source]}"
    if source == "cuda_max_allocated":
        return f"{note} (every method has it)."
    lacking = summary.filter(~HAS_GPU_PEAK)
    if lacking.height == summary.height:
        return f"{note} (the cost table's train mem): no method has a peak GPU figure (a CPU sweep)."
    names = ", ".join(set_name(row) for row in lacking.iter_rows(named=True))
    return (f"{note} (the cost table's train mem) for every method: no peak GPU figure for {names}, "
            "and one set is scored on one kind of memory.")


def _distinct_overrides(runs: pl.DataFrame) -> list[str | None]:
    """Per run, its overrides minus those every run of the sweep shares (when there are several)."""
    known = [set(o) for o in runs["overrides"] if o is not None]
    common = set.intersection(*known) if len(known) > 1 else set()
    return [None if o is None else " ".join(x for x in o if x not in common) or None
            for o in runs["overrides"]]


def failed_table(runs: pl.DataFrame) -> str:
    """The failed runs of ``runs`` as a markdown table: run dir, identity, the overrides that
    set the run apart from the rest of the sweep, and the last line of its error."""
    failed = failed_runs(runs.with_columns(overrides=pl.Series(_distinct_overrides(runs), dtype=pl.String)))
    failed = failed.select("run_dir", "dataset", "method", "seed", "overrides", "error")
    return markdown_table(failed.columns, failed.rows(), "llllll")


def unreadable_table(runs: pl.DataFrame) -> str:
    """The unreadable runs of ``runs`` as a markdown table: run dir and which file cannot be
    parsed, and why."""
    unreadable = unreadable_runs(runs).select("run_dir", "error")
    return markdown_table(unreadable.columns, unreadable.rows(), "ll")


def render_report(summary: pl.DataFrame, runs: pl.DataFrame, weights: TPMEWeights, title: str) -> str:
    """The whole report: a section per dataset (table, notes, cost table, its note), then the
    failed runs, then the unreadable ones (counted apart: their status is unknown)."""
    n_failed = failed_runs(runs).height
    n_unreadable = unreadable_runs(runs).height
    unreadable = f", {n_unreadable} unreadable" if n_unreadable else ""
    parts = [f"# {title}", f"{runs.height} runs, {n_failed} failed{unreadable}."]
    for part in summary.partition_by("dataset", maintain_order=True):
        notes = "\n".join(f"- {note}" for note in _notes(part, weights))
        cost_note = f"- {_COST_NOTE}" + (f"\n- {_TEACHER_NOTE}" if _has_teacher(part) else "")
        parts += [f"## {part['dataset'][0]}", summary_table(part), notes, cost_table(part), cost_note]
        if (curve := learning_curve_table(part)) is not None:
            parts += [curve, f"- {_CURVE_NOTE}"]
    if summary.is_empty():
        parts.append("No complete runs.")
    if n_failed:
        parts += [f"## Failed runs ({n_failed})", failed_table(runs)]
    if n_unreadable:
        parts += [f"## Unreadable runs ({n_unreadable})", unreadable_table(runs)]
    return "\n\n".join(parts) + "\n"
