"""Robustness to missing modalities over a sweep's results.json files, two markdown sections.

Quality per modality subset: the runs' ``metrics.test_by_modalities`` (``eval.modality_subsets``)
as one table per dataset and metric, a row per (method, modality dropout), a column per subset.

    ## Quality per modality subset: movielens, NDCG@10
    | method | modality dropout | seeds | image+text | text | image |
    | iisan | 0.0 | 3 | 0.1100 ± 0.0040 | 0.0700 ± 0.0030 | 0.0400 ± 0.0050 |
    | iisan | 0.3 | 3 | ...

Gate pruning: the runs' ``pruning`` (``prune.gate_threshold``, recsys.train.modality_eval), a
row per (dataset, method, modality dropout, threshold): mean gate weight per modality, what was
pruned in how many seeds, test NDCG@10 with every modality and after pruning, and the item
FLOPs and feature bytes saved.

Only complete runs count; a run's modality dropout is its config's ``adapter.modality_dropout``
(0 in a config from before it existed).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from recsys.report.aggregate import METRICS, find_run_dirs
from recsys.report.markdown import _mean_std, markdown_table

SUBSET_SCHEMA = {
    "run_dir": pl.String, "dataset": pl.String, "method": pl.String, "modality_dropout": pl.Float64,
    "seed": pl.Int64, "subset": pl.String, **{m: pl.Float64 for m in METRICS},
}


def _complete_runs(sweep_dir: str | Path) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(run fields, results) per complete run under ``sweep_dir``; run fields: run_dir, dataset,
    method, seed, modality_dropout. A results.json that cannot be read is skipped (the main
    report lists it as unreadable)."""
    for run_dir in find_run_dirs(sweep_dir):
        try:
            results = json.loads((run_dir / "results.json").read_text())
            if results.get("status") != "complete" or not isinstance(results.get("metrics"), dict):
                continue
        except (OSError, ValueError, AttributeError):
            continue
        adapter = (results.get("config") or {}).get("adapter") or {}
        yield ({"run_dir": str(run_dir.relative_to(sweep_dir)), "dataset": results.get("dataset"),
                "method": results.get("method"), "seed": results.get("seed"),
                "modality_dropout": adapter.get("modality_dropout", 0.0)}, results)


def load_subset_metrics(sweep_dir: str | Path) -> pl.DataFrame:
    """One row per (complete run, tested subset) under ``sweep_dir``, columns ``SUBSET_SCHEMA``
    (subsets in the order the run tested them)."""
    rows = []
    for run, results in _complete_runs(sweep_dir):
        for subset, metrics in (results["metrics"].get("test_by_modalities") or {}).items():
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


def load_pruning(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One dict per complete run under ``sweep_dir`` that pruned by its gates: the run fields,
    threshold, gate_weights {modality: weight}, pruned [modalities], ndcg_all and ndcg_pruned
    (test NDCG@10 with every modality / after pruning), flops_saved and bytes_saved (fractions
    of the item FLOPs per item and of the cached feature bytes)."""
    rows = []
    for run, results in _complete_runs(sweep_dir):
        pruning = results.get("pruning")
        if not pruning:
            continue
        saved = pruning["cost_saved"]
        rows.append(run | {"threshold": pruning["threshold"], "gate_weights": pruning["gate_weights"],
                           "pruned": pruning["pruned"], "ndcg_all": results["metrics"]["test"].get("ndcg@10"),
                           "ndcg_pruned": pruning["test"].get("ndcg@10"),
                           "flops_saved": saved["item_flops_per_item"]["saved_fraction"],
                           "bytes_saved": saved["feature_bytes"]["saved_fraction"]})
    return rows


def _mean_std_of(values: list[float | None]) -> str:
    series = pl.Series(values, dtype=pl.Float64)
    return _mean_std(series.mean(), series.std())


def pruning_table(rows: list[dict[str, Any]]) -> str:
    """The markdown section of ``load_pruning``'s rows ("" when there are none): mean ± std over
    seeds per (dataset, method, modality dropout, threshold)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["dataset"], row["method"], row["modality_dropout"], row["threshold"])
        groups.setdefault(key, []).append(row)
    table = []
    for (dataset, method, dropout, threshold), runs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        modalities = list(runs[0]["gate_weights"])
        gates = ", ".join(f"{m} {_mean_std_of([r['gate_weights'].get(m) for r in runs])}" for m in modalities)
        pruned = Counter("+".join(run["pruned"]) or "none" for run in runs)
        table.append([dataset, method, f"{dropout:g}", f"{threshold:g}", len(runs), gates,
                      ", ".join(f"{k} ({n})" for k, n in pruned.items()),
                      *(_mean_std_of([r[k] for r in runs]) for k in ("ndcg_all", "ndcg_pruned")),
                      *(f"{pl.Series([r[k] for r in runs]).mean():.1%}"
                        for k in ("flops_saved", "bytes_saved"))])
    if not table:
        return ""
    header = ["dataset", "method", "modality dropout", "threshold", "seeds", "gate weight", "pruned (seeds)",
              "NDCG@10 all", "NDCG@10 pruned", "item FLOPs saved", "feature bytes saved"]
    return "\n\n".join([
        "## Gate pruning", markdown_table(header, table, "llrrrllrrrr"),
        "- prune.gate_threshold: a modality whose mean MoMEF gate weight over the validation pass at the "
        "best checkpoint is under the threshold is pruned (never all of them), and the run is tested "
        "without it; gate weight: mean ± std over seeds; saved: mean fraction of the item FLOPs per item "
        "and of the cached feature bytes (recsys.train.modality_eval)."])
