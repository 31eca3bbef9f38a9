"""The sweep report as markdown: one table per dataset, then the failed and unreadable runs.

    ## synthetic
    | method | seeds | HR@10 | NDCG@10 | trainable params | s/epoch | peak mem (MiB) | val pass (s) | TPME |
    ...
    ## Failed runs (1)
    | run_dir | dataset | method | seed | overrides | error |
    ## Unreadable runs (1)
    | run_dir | error |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import polars as pl

from recsys.report.aggregate import METRICS, failed_runs, unreadable_runs
from recsys.report.tpme import TPMEWeights

_MEMORY_KINDS = {  # EfficiencyCallback's memory_kind -> what the figure is
    "cuda_max_allocated": "peak GPU memory allocated",
    "cpu_peak_rss": "peak process RSS while training (CPU; reset per phase on Linux, but it includes "
                    "the libraries and whatever earlier jobs of the process left allocated, so it "
                    "separates methods far less than GPU memory does)",
}
_TPME_INPUTS = {
    "s_per_epoch": "s/epoch", "trainable_params": "trainable params", "peak_memory_mib": "peak memory",
}


def _cell(value: Any) -> str:
    """A table cell: '-' for missing, pipes escaped, one line."""
    if value is None:
        return "-"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _num(spec: str) -> Callable[[Any], str]:
    return lambda v: "-" if v is None else format(v, spec)


def _mean_std(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str) -> str:
    """A GitHub markdown table; ``align`` has one 'l' or 'r' per column."""
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = [header, rule, *[[_cell(v) for v in row] for row in rows]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("method", lambda r: r["method"]),
    ("seeds", lambda r: str(r["n_seeds"])),
    *[(m.upper(), lambda r, m=m: _mean_std(r[f"{m}_mean"], r[f"{m}_std"])) for m in METRICS],
    ("trainable params", lambda r: _num(",")(r["trainable_params"])),
    ("s/epoch", lambda r: _num(".2f")(r["s_per_epoch"])),
    ("s/step", lambda r: _num(".3f")(r["s_per_step"])),
    ("steps/epoch", lambda r: _num("d")(r["steps_per_epoch"])),
    ("peak mem (MiB)", lambda r: _num(".0f")(r["peak_memory_mib"])),
    ("val pass (s)", lambda r: _num(".2f")(r["val_eval_s"])),
    ("TPME", lambda r: _num(".3f")(r["tpme"])),
]


def summary_table(summary: pl.DataFrame) -> str:
    """The methods of ``summary`` (rows of one dataset) as a markdown table."""
    rows = [[fmt(r) for _, fmt in _COLUMNS] for r in summary.iter_rows(named=True)]
    return markdown_table([name for name, _ in _COLUMNS], rows, "lr" + "r" * (len(_COLUMNS) - 2))


def _notes(summary: pl.DataFrame, weights: TPMEWeights) -> list[str]:
    kinds = {k for joined in summary["memory_kind"].drop_nulls() for k in joined.split("+")}
    notes = [
        f"{' / '.join(m.upper() for m in METRICS)}: test, mean ± std over seeds. s/epoch: median over seeds. "
        f"Memory: {', '.join(_MEMORY_KINDS.get(k, k) for k in sorted(kinds)) or 'unknown'}.",
        f"TPME = {weights} over min-max normalised time, params, memory of this table's "
        "methods; lower is better; comparable within this table only.",
    ]
    for r in summary.filter(pl.col("tpme").is_null()).iter_rows(named=True):
        missing = ", ".join(label for col, label in _TPME_INPUTS.items() if r[col] is None)
        notes.append(f"TPME not computed for {r['method']}: missing {missing}.")
    return notes


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
    """The whole report: a section per dataset (table + notes), then the failed runs, then
    the unreadable ones (counted apart: their status is unknown)."""
    n_failed = failed_runs(runs).height
    n_unreadable = unreadable_runs(runs).height
    unreadable = f", {n_unreadable} unreadable" if n_unreadable else ""
    parts = [f"# {title}", f"{runs.height} runs, {n_failed} failed{unreadable}."]
    for part in summary.partition_by("dataset", maintain_order=True):
        notes = "\n".join(f"- {note}" for note in _notes(part, weights))
        parts += [f"## {part['dataset'][0]}", summary_table(part), notes]
    if summary.is_empty():
        parts.append("No complete runs.")
    if n_failed:
        parts += [f"## Failed runs ({n_failed})", failed_table(runs)]
    if n_unreadable:
        parts += [f"## Unreadable runs ({n_unreadable})", unreadable_table(runs)]
    return "\n\n".join(parts) + "\n"
