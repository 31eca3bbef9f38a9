"""Sweep directory -> one row per run (``load_runs``) -> one row per method (``summarise``).

A run is a job directory: one with a ``results.json`` (see ``recsys.train.results``), or one
with a ``.hydra/`` folder but no ``results.json`` (killed before it could write one, or still
running) which counts as failed. Directories are searched recursively, so a Hydra multirun
(``<sweep>/<job num>/``), nested sweeps and a folder of single runs all work
(``find_run_dirs``). What ``recsys-eval`` / ``recsys-export`` leave inside a run (their Hydra
log directories ``RUN_LOG_DIRS``, each with its own ``.hydra/``, and ``export/``) is not a run.

A run whose ``results.json`` or saved Hydra config cannot be parsed (truncated, not JSON or
YAML, wrong shape) is *unreadable*: status ``"unreadable"``, the file and the parse error in
``error``, counted apart from the failed runs (``unreadable_runs``, ``failed_runs``).

Methods are grouped by (dataset, method) where *method* is the run's ``label``
(``results["method"]``; conf/train.yaml sets it to the chosen adapter config, which tells
apart ``iisan_intra`` from ``iisan_add``, both registry name ``iisan``). A killed job's
label is read from the adapter choice Hydra saved in ``.hydra/hydra.yaml``. Only complete
runs are aggregated; failed ones are listed apart.

Besides the timed figures, a run carries the counted ones of ``recsys.train.cost`` (the same on
any machine): ``FLOPS``, the counted training memory and its parts (``COUNTED_MEMORY``, in MiB)
and query latency (``LATENCY``); a results.json written before they existed gives nulls.

A run trained on a subset of the training data (``data.subsample``, recsys/data/subsample.py)
is grouped apart from the same method on all of it: a row is a (dataset, method, train
fraction, strategy), ``train_fraction`` 1.0 (and strategy null) for the whole training set,
results.json files from before subsampling included. ``train_flops_total`` is the run's whole
training work: counted FLOPs per sequence x the training rows it kept x epochs trained.

TPME's memory is one kind per set of methods scored together (a dataset): the peak GPU memory
allocated when every method of the set has one, otherwise the counted training memory of all
of them (a CPU run's peak RSS is mostly the libraries; mixing kinds would compare apples with
pears). ``summarise`` says which in ``memory_source`` (``MEMORY_SOURCES``).

A distilled student (``distill=kd``) also carries its teacher's counted forward FLOPs
(``TEACHER_COLUMNS``), apart from its own figures, which are the student's alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from omegaconf import OmegaConf

from recsys.report.tpme import DEFAULT_WEIGHTS, TPMEWeights, tpme
from recsys.train.results import LATENCY_BATCH_SIZES, mib

METRICS = ("hr@10", "ndcg@10")  # test metrics reported as mean ± std over seeds

#: The Hydra log directories recsys-eval and recsys-export write inside a run directory
#: (``hydra.run.dir`` of conf/eval.yaml and conf/export.yaml): they hold a ``.hydra/`` of
#: their own but are no training job.
RUN_LOG_DIRS = ("eval_logs", "export_logs")

UNREADABLE = "unreadable"  # the status of a run whose files cannot be parsed

#: Counted FLOPs (results.json keys and run / summary columns): per training sequence (forward +
#: backward), per item through the item tower (no gradients), per user query (user encoder +
#: full ranking over the catalogue).
FLOPS = ("train_flops_per_sequence", "item_flops_per_item", "query_flops")
#: Counted training memory: results.json ``<name>_bytes`` -> column ``<name>_mib``. Parameters +
#: gradients + optimiser state, the activations saved for backward in one step, the resident
#: item features; ``train_memory`` is the sum of the three.
COUNTED_MEMORY = ("model_state", "peak_activation", "feature", "train_memory")
#: Query latency in ms (user encoder + exact top-10), p50 and p99 per batch size.
LATENCY = tuple(f"query_{q}_ms_b{size}" for size in LATENCY_BATCH_SIZES for q in ("p50", "p99"))
#: Every counted / inference cost column, run and summary alike (summary: median over seeds).
COST_COLUMNS = (*FLOPS, *(f"{name}_mib" for name in COUNTED_MEMORY), *LATENCY)
#: A distilled student's teacher (recsys.train.distill), counted apart from the student's cost:
#: its forward per training sequence, on top of ``train_flops_per_sequence``; null without one.
TEACHER_COLUMNS = ("teacher_flops_per_sequence",)

#: ``memory_source`` -> the memory TPME used for a set of methods (column ``tpme_memory_mib``).
MEMORY_SOURCES = {
    "cuda_max_allocated": "peak GPU memory allocated",
    "counted": "counted training memory",
}
#: A summary row whose runs all measured their peak GPU memory.
HAS_GPU_PEAK = ((pl.col("memory_kind") == "cuda_max_allocated") & pl.col("peak_memory_mib").is_not_null()
                ).fill_null(False)

RUN_SCHEMA = {
    "run_dir": pl.String, "status": pl.String, "dataset": pl.String, "method": pl.String,
    "adapter": pl.String, "seed": pl.Int64,
    **{f"test_{m}": pl.Float64 for m in METRICS},
    "trainable_params": pl.Int64, "s_per_epoch": pl.Float64, "s_per_step": pl.Float64,
    "steps_per_epoch": pl.Int64, "peak_memory_mib": pl.Float64,
    "memory_kind": pl.String, "val_eval_s": pl.Float64, **{c: pl.Float64 for c in COST_COLUMNS},
    "train_fraction": pl.Float64, "train_strategy": pl.String, "train_flops_total": pl.Float64,
    **{c: pl.Float64 for c in TEACHER_COLUMNS},
    "error": pl.String, "overrides": pl.List(pl.String),
}
#: What sets a summary row apart: a method on a dataset, trained on a fraction of its data.
GROUP = ("dataset", "method", "train_fraction", "train_strategy")


def _train_data(results: dict[str, Any], eff: dict[str, Any]) -> dict[str, Any]:
    """``train_fraction``, ``train_strategy`` (null for the whole set) and ``train_flops_total``
    of a results.json (module doc)."""
    subsample = results.get("data_subsample") or {}
    fraction = float(subsample.get("fraction", 1.0))
    rows, per_sequence, epochs = ((subsample.get("kept") or {}).get("sequences"),
                                  eff.get("train_flops_per_sequence"), eff.get("epochs"))
    total = None if None in (rows, per_sequence, epochs) else per_sequence * rows * epochs
    return {"train_fraction": fraction, "train_strategy": subsample.get("strategy") if fraction < 1 else None,
            "train_flops_total": total}


def set_name(row: dict[str, Any]) -> str:
    """A summary row's name in tables and plots: its method, and the share of the training
    data it saw when not all of it (``iisan @ 25% recent``)."""
    fraction = row.get("train_fraction")
    if fraction is None or fraction >= 1:
        return row["method"]
    return f"{row['method']} @ {fraction:.0%} {row['train_strategy']}"


def _last_line(text: str | None) -> str | None:
    """Last non-empty line of an error message / traceback (the exception itself)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else None


class UnreadableRunFile(ValueError):
    """A file of a run directory that cannot be parsed: ``path`` and what is wrong (``reason``)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _yaml_reason(err: Exception) -> str:
    """A YAML parse error in one line: the problem and where (the path is said apart)."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        return f"{err.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(err).split())


def _load_yaml(path: Path) -> Any:
    """A saved Hydra file (``.hydra/*.yaml``), parsed by OmegaConf."""
    try:
        return OmegaConf.load(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UnreadableRunFile(path, _yaml_reason(err)) from err


_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def _object(value: Any, what: str, path: Path) -> dict[str, Any]:
    """``value`` as a JSON object (``None`` -> empty); anything else is an unreadable ``path``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UnreadableRunFile(path, f"{what} is a JSON {_JSON_TYPES[type(value)]}, not an object")
    return value


def _overrides(job_dir: Path) -> list[str] | None:
    """The job's command-line overrides (``.hydra/overrides.yaml``)."""
    path = job_dir / ".hydra" / "overrides.yaml"
    return [str(o) for o in _load_yaml(path)] if path.is_file() else None


def _run_from_results(path: Path) -> dict[str, Any]:
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise UnreadableRunFile(path, str(err)) from err
    results = _object(results, "the file", path)
    test = _object(_object(results.get("metrics"), "metrics", path).get("test"), "metrics.test", path)
    eff = _object(results.get("efficiency"), "efficiency", path)
    return {
        "status": results.get("status"), "dataset": results.get("dataset"),
        "method": results.get("method"), "adapter": results.get("adapter"),
        "seed": results.get("seed"),
        **{f"test_{m}": test.get(m) for m in METRICS},
        "trainable_params": eff.get("trainable_params"), "s_per_epoch": eff.get("s_per_epoch"),
        "s_per_step": eff.get("s_per_step"), "steps_per_epoch": eff.get("steps_per_epoch"),
        "peak_memory_mib": mib(eff.get("peak_train_memory_bytes")), "memory_kind": eff.get("memory_kind"),
        "val_eval_s": eff.get("val_eval_s"),
        **{c: eff.get(c) for c in (*FLOPS, *LATENCY, *TEACHER_COLUMNS)},
        **{f"{name}_mib": mib(eff.get(f"{name}_bytes")) for name in COUNTED_MEMORY},
        **_train_data(results, eff),
        "error": _last_line(results.get("error")),
    }


def _run_without_results(job_dir: Path) -> dict[str, Any]:
    """A job that never wrote results.json: identify it from its saved Hydra config."""
    saved = {
        name: _load_yaml(path) if (path := job_dir / ".hydra" / f"{name}.yaml").is_file()
        else OmegaConf.create()
        for name in ("config", "hydra")
    }

    def get(name: str, key: str) -> Any:  # interpolations needing a live Hydra -> None
        return OmegaConf.select(saved[name], key, throw_on_resolution_failure=False)

    return {
        "status": "failed", "dataset": get("config", "data.name"),
        "method": get("hydra", "hydra.runtime.choices.adapter") or get("config", "adapter.name"),
        "adapter": get("config", "adapter.name"), "seed": get("config", "seed"),
        "error": "no results.json: killed before writing it, or still running",
    }


def find_run_dirs(sweep_dir: str | Path) -> list[Path]:
    """The run directories under ``sweep_dir`` (itself included), sorted.

    A directory is a run when it holds ``results.json`` or a ``.hydra/`` folder. Inside a run,
    the Hydra log directories of recsys-eval / recsys-export (``RUN_LOG_DIRS``) are not
    searched; its other folders (``checkpoints/``, ``export/``, ...) hold neither file.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(sweep_dir):
        is_run = "results.json" in filenames or ".hydra" in dirnames
        if is_run:
            found.append(Path(dirpath))
        dirnames[:] = [d for d in dirnames if d != ".hydra" and not (is_run and d in RUN_LOG_DIRS)]
    return sorted(found)


def _read_run(job_dir: Path) -> dict[str, Any]:
    """A run's row (without ``run_dir``) from its results.json, else its saved Hydra config."""
    results = job_dir / "results.json"
    row = _run_from_results(results) if results.is_file() else _run_without_results(job_dir)
    return row | {"overrides": _overrides(job_dir)}


def load_runs(sweep_dir: str | Path) -> pl.DataFrame:
    """Every run under ``sweep_dir`` (``find_run_dirs``), one row each, columns ``RUN_SCHEMA``.

    ``run_dir`` is relative to ``sweep_dir``; ``error`` is the last line of the run's
    traceback, or for an unreadable run (status ``"unreadable"``, nothing else filled in) the
    file, relative to the run directory, and why it cannot be parsed; ``peak_memory_mib`` is the
    training peak (GPU allocated or CPU RSS, see ``memory_kind``); ``COST_COLUMNS`` are the
    counted FLOPs and memory and the query latency (null in an older results.json). Rows are
    ordered by run directory.
    """
    sweep_dir = Path(sweep_dir)
    rows = []
    for job_dir in find_run_dirs(sweep_dir):
        try:
            row = _read_run(job_dir)
        except UnreadableRunFile as err:
            row = {"status": UNREADABLE, "error": f"{err.path.relative_to(job_dir)}: {err.reason}"}
        rows.append(row | {"run_dir": str(job_dir.relative_to(sweep_dir))})
    return pl.DataFrame(rows, schema=RUN_SCHEMA)


def unreadable_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """The runs whose results.json or saved Hydra config cannot be parsed."""
    return runs.filter(pl.col("status") == UNREADABLE)


def failed_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """The readable runs that did not complete (status neither "complete" nor "unreadable")."""
    return runs.filter(~pl.col("status").fill_null("").is_in(["complete", UNREADABLE]))


def _tpme_memory(part: pl.DataFrame) -> pl.DataFrame:
    """Add ``memory_source`` and ``tpme_memory_mib`` to the methods of one TPME set: the GPU peak
    when every method has one, else the counted training memory of all."""
    source = "cuda_max_allocated" if part.select(HAS_GPU_PEAK.all()).item() else "counted"
    column = "peak_memory_mib" if source == "cuda_max_allocated" else "train_memory_mib"
    return part.with_columns(memory_source=pl.lit(source), tpme_memory_mib=pl.col(column))


def _with_tpme(summary: pl.DataFrame, weights: TPMEWeights) -> pl.DataFrame:
    """Add ``memory_source``, ``tpme_memory_mib`` and ``tpme``, computed separately within each
    dataset."""
    if summary.is_empty():
        return summary.with_columns(memory_source=pl.lit(None, pl.String),
                                    tpme_memory_mib=pl.lit(None, pl.Float64), tpme=pl.lit(None, pl.Float64))
    parts = [
        part.with_columns(tpme=pl.Series(
            tpme(part["s_per_epoch"].to_list(), part["trainable_params"].to_list(),
                 part["tpme_memory_mib"].to_list(), weights),
            dtype=pl.Float64,
        ))
        for part in map(_tpme_memory, summary.partition_by("dataset", maintain_order=True))
    ]
    return pl.concat(parts)


def summarise(runs: pl.DataFrame, weights: TPMEWeights = DEFAULT_WEIGHTS) -> pl.DataFrame:
    """One row per ``GROUP`` (a method on a dataset and a share of its training data) over its
    complete runs.

    Columns: ``GROUP`` (dataset, method, train_fraction, train_strategy),
    adapter, n_seeds, ``<metric>_mean`` / ``<metric>_std`` for each
    of ``METRICS`` (test; std null for a single seed), trainable_params, s_per_epoch and
    s_per_step (medians over seeds), steps_per_epoch (min: fewer than the epoch's batches
    when a run was limited to a fixed number of steps), peak_memory_mib (mean; GPU allocated
    or CPU RSS), memory_kind (its kinds, "+"-joined), val_eval_s (median), ``COST_COLUMNS``
    (medians: counted FLOPs, counted memory in MiB, query latency in ms), ``TEACHER_COLUMNS``
    (medians; null for runs without a teacher), memory_source and
    tpme_memory_mib (the memory TPME used for the whole dataset: "cuda_max_allocated" and
    ``peak_memory_mib`` where every method has a GPU peak, else "counted" and
    ``train_memory_mib``), tpme (over the methods of the same dataset, from these per-method
    figures), train_flops_total (median). Sorted by dataset, then NDCG@10 (best first).
    """
    complete = runs.filter(pl.col("status") == "complete")
    summary = (
        complete.group_by(*GROUP, maintain_order=True)
        .agg(
            pl.col("adapter").first(),
            pl.len().alias("n_seeds"),
            *[agg for m in METRICS for agg in (pl.col(f"test_{m}").mean().alias(f"{m}_mean"),
                                               pl.col(f"test_{m}").std().alias(f"{m}_std"))],
            pl.col("trainable_params").median().cast(pl.Int64),
            pl.col("s_per_epoch").median(),
            pl.col("s_per_step").median(),
            pl.col("steps_per_epoch").min(),
            pl.col("peak_memory_mib").mean(),
            pl.col("memory_kind").unique().sort().str.join("+"),
            pl.col("val_eval_s").median(),
            *[pl.col(c).median() for c in (*COST_COLUMNS, *TEACHER_COLUMNS, "train_flops_total")],
        )
        .sort(["dataset", f"{METRICS[-1]}_mean", "method"], descending=[False, True, False], nulls_last=True)
    )
    return _with_tpme(summary, weights)
