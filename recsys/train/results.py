"""results.json: the one record per run that reports and notebooks aggregate.

Layout (all keys always present; figures that do not apply are null):

    {"status": "complete" | "failed" | "interrupted",
     "method": label (the adapter config chosen), "adapter": registry name,
     "dataset": data name, "seed": int,
     "metrics": {"val": {...best validation...}, "test": {...at best checkpoint...},
                 "test_by_modalities": {subset name: {...}} | null (eval.modality_subsets)},
     "pruning": {...gate pruning...} | null (prune.gate_threshold; recsys.train.modality_eval),
     "baselines": {"popularity": {"test": {...}}},
     "efficiency": {...EfficiencyCallback.summary()..., "cache_build_s": float | null,
                    "cache_bytes": int | null,
                    ...recsys.train.cost.measure_costs(): counted FLOPs and memory
                    (``*_flops*``, ``*_bytes``), query latency ``query_p50_ms_b1`` ...;
                    the student's own, and with a teacher its counted cost apart:
                    ``teacher_run``, ``teacher_flops_per_step`` (forward), ``teacher_flops_per_sequence``,
                    ``teacher_params``, ``teacher_model_state_bytes``, ``teacher_feature_bytes``
                    (``recsys.train.distill.teacher_costs``)},
     "data_subsample": {"fraction", "strategy", "seed", "kept": {...}, "full": {...}}: the
                    training users / targets / interactions / sequences kept of the full set
                    (``SequenceDataModule.subsample_stats``; kept = full at fraction 1),
     "distill": null (no teacher) | {"teacher": run dir, "checkpoint": its file, "alpha", "tau",
                    "teacher_method", "teacher_test": {...its test metrics, from its results.json...}},
     "error": str | null (the traceback of a failed run),
     "signal": "SIGTERM" | "SIGINT" | null (what interrupted the run),
     "config": resolved Hydra config (also the checkpoints' hyper-parameters)}

Written atomically (temp file + rename) so a killed job never leaves half a file, and a
sweep can treat "results.json with status complete" as done. Files written before the counted
costs existed lack their keys; readers take them as null (``.get``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The batch sizes query latency is measured at (``query_p50_ms_b<size>``, ``query_p99_ms_b<size>``).
LATENCY_BATCH_SIZES = (1, 256)


def mib(n_bytes: float | None) -> float | None:
    """Bytes in MiB; ``None`` stays ``None``."""
    return None if n_bytes is None else n_bytes / 2**20


def _fmt(value: Any, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value / scale, spec)


def latency_cell(figures: Mapping[str, Any], size: int) -> str:
    """Query latency at batch ``size`` as "<p50> / <p99>" (ms), from an efficiency dict or a
    report row (the same keys); "-" when either is missing."""
    p50, p99 = figures.get(f"query_p50_ms_b{size}"), figures.get(f"query_p99_ms_b{size}")
    return "-" if p50 is None or p99 is None else f"{p50:.2f} / {p99:.2f}"


def _counted_memory(eff: Mapping[str, Any]) -> str:
    """The counted training memory as "<total> = state + activations + features" (MiB), "-"
    when results.json lacks it."""
    parts = [eff.get(k) for k in ("model_state_bytes", "peak_activation_bytes", "feature_bytes")]
    total = eff.get("train_memory_bytes")
    if total is None or None in parts:
        return "-"
    state, activations, features = (mib(b) for b in parts)
    return f"{mib(total):.1f} = state {state:.1f} + activations {activations:.1f} + features {features:.1f}"


def _metric_row(name: str, metrics: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return (name, *(_fmt(metrics.get(k), ".4f") for k in ("hr@10", "ndcg@10", "mrr@10")))


def format_summary(results: dict[str, Any]) -> str:
    """A small fixed-width table of one run: method vs popularity, plus efficiency (timed and
    counted; a figure the run lacks is "-"; with a teacher, its test metrics and cost too)."""
    test = results["metrics"].get("test") or {}
    pop = (results["baselines"].get("popularity") or {}).get("test") or {}
    eff = results["efficiency"]
    mem_label = "peak GPU mem (MiB)" if eff.get("memory_kind") == "cuda_max_allocated" else "peak RSS (MiB)"
    teacher = results.get("distill") or {}
    rows = [
        ("", "HR@10", "NDCG@10", "MRR@10"),
        _metric_row(results["method"], test),
        _metric_row("popularity", pop),
    ]
    if teacher:
        rows.append(_metric_row("teacher", teacher.get("teacher_test") or {}))
    lines = [f"{a:<16}{b:>10}{c:>10}{d:>10}" for a, b, c, d in rows]
    facts = [
        ("dataset", results["dataset"]),
        ("trainable params", f"{eff.get('trainable_params', 0):,}"),
        ("epochs", eff.get("epochs")),
        ("s / epoch (median)", _fmt(eff.get("s_per_epoch"), ".2f")),
        ("sequences / s", _fmt(eff.get("sequences_per_s"), ".0f")),
        (mem_label, _fmt(mib(eff.get("peak_train_memory_bytes")), ".0f")),
        ("counted train mem (MiB)", _counted_memory(eff)),
        ("train GFLOPs / sequence", _fmt(eff.get("train_flops_per_sequence"), ".4g", 1e9)),
        ("item MFLOPs / item", _fmt(eff.get("item_flops_per_item"), ".4g", 1e6)),
        ("query MFLOPs / user", _fmt(eff.get("query_flops"), ".4g", 1e6)),
        *[(f"query b{size} p50/p99 (ms)", latency_cell(eff, size)) for size in LATENCY_BATCH_SIZES],
        ("val pass (s)", _fmt(eff.get("val_eval_s"), ".2f")),
        ("item tower (ms / item)", _fmt(eff.get("item_latency_ms"), ".3f")),
        (f"user batch of {eff.get('eval_batch_size')} (ms)", _fmt(eff.get("user_batch_latency_ms"), ".1f")),
        ("cache build (s)", _fmt(eff.get("cache_build_s"), ".1f")),
        ("cache size (MiB)", _fmt(mib(eff.get("cache_bytes")), ".1f")),
    ]
    if teacher:
        facts += [
            ("teacher", f"{teacher.get('teacher_method')} ({teacher.get('teacher')})"),
            ("distill alpha / tau", f"{teacher.get('alpha')} / {teacher.get('tau')}"),
            ("teacher GFLOPs / seq", _fmt(eff.get("teacher_flops_per_sequence"), ".4g", 1e9)),
            ("teacher params", f"{eff.get('teacher_params', 0):,}"),
        ]
    lines += [f"{k:<24}{v}" for k, v in facts]
    return "\n".join(lines)
