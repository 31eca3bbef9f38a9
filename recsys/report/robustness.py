"""Quality per modality subset: the runs' ``metrics.test_by_modalities`` (``eval.modality_subsets``)
as one table per dataset and metric, a row per (method, modality dropout), a column per subset.

    ## Quality per modality subset: movielens, NDCG@10
    | method | modality dropout | seeds | image+text | text | image |
    | iisan | 0.0 | 3 | 0.1100 ± 0.0040 | 0.0700 ± 0.0030 | 0.0400 ± 0.0050 |
    | iisan | 0.3 | 3 | ...

Only complete runs that tested subsets count; a run's modality dropout is its config's
``adapter.modality_dropout`` (0 in a config from before it existed).
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from recsys.report.aggregate import METRICS, find_run_dirs
from recsys.report.markdown import _mean_std, markdown_table

SUBSET_SCHEMA = {
    "run_dir": pl.String, "dataset": pl.String, "method": pl.String, "modality_dropout": pl.Float64,
    "seed": pl.Int64, "subset": pl.String, **{m: pl.Float64 for m in METRICS},
}


def load_subset_metrics(sweep_dir: str | Path) -> pl.DataFrame:
    """One row per (complete run, tested subset) under ``sweep_dir``, columns ``SUBSET_SCHEMA``
    (subsets in the order the run tested them); a results.json that cannot be read is skipped
    (the main report lists it as unreadable)."""
    rows = []
    for run_dir in find_run_dirs(sweep_dir):
        try:
            results = json.loads((run_dir / "results.json").read_text())
            complete = results.get("status") == "complete"
            by_subset = results["metrics"].get("test_by_modalities") if complete else None
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            continue
        adapter = (results.get("config") or {}).get("adapter") or {}
        run = {"run_dir": str(run_dir.relative_to(sweep_dir)), "dataset": results.get("dataset"),
               "method": results.get("method"), "seed": results.get("seed"),
               "modality_dropout": adapter.get("modality_dropout", 0.0)}
        for subset, metrics in (by_subset or {}).items():
            rows.append(run | {"subset": subset, **{m: metrics.get(m) for m in METRICS}})
    return pl.DataFrame(rows, schema=SUBSET_SCHEMA)


def subset_tables(rows: pl.DataFrame) -> str:
    """The markdown section of ``load_subset_metrics``' rows ("" when there are none): per
    dataset and metric, mean ± std over seeds per (method, dropout) and subset."""
    parts = []
    for part in rows.partition_by("dataset", maintain_order=True):
        subsets = part["subset"].unique(maintain_order=True).to_list()
        groups = sorted(part.group_by("method", "modality_dropout"), key=lambda group: group[0])
        for metric in METRICS:
            table = []
            for (method, dropout), group in groups:
                by_subset = group.group_by("subset")
                cells = {s: _mean_std(g[metric].mean(), g[metric].std()) for (s,), g in by_subset}
                seeds = group["seed"].n_unique()
                table.append([method, f"{dropout:g}", seeds, *[cells.get(s) for s in subsets]])
            parts += [f"## Quality per modality subset: {part['dataset'][0]}, {metric.upper()}",
                      markdown_table(["method", "modality dropout", "seeds", *subsets], table,
                                     "lrr" + "r" * len(subsets))]
    if parts:
        parts.append("- Test at each run's best checkpoint with only the subset's modalities (the others "
                     "absent for every item: zero feature rows), mean ± std over seeds; modality dropout: "
                     "the training probability of losing each modality per batch (adapter.modality_dropout).")
    return "\n\n".join(parts)
