"""results.json: the one record per run that reports and notebooks aggregate.

Layout (all keys always present; figures that do not apply are null):

    {"status": "complete" | "failed" | "interrupted",
     "method": label (the adapter config chosen), "adapter": registry name,
     "dataset": data name, "seed": int,
     "metrics": {"val": {...best validation...}, "test": {...at best checkpoint...}},
     "baselines": {"popularity": {"test": {...}}},
     "efficiency": {...EfficiencyCallback.summary()..., "cache_build_s": float | null,
                    "cache_bytes": int | null},
     "error": str | null (the traceback of a failed run),
     "signal": "SIGTERM" | "SIGINT" | null (what interrupted the run),
     "config": resolved Hydra config (also the checkpoints' hyper-parameters)}

Written atomically (temp file + rename) so a killed job never leaves half a file, and a
sweep can treat "results.json with status complete" as done.
"""

from __future__ import annotations

from typing import Any


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_summary(results: dict[str, Any]) -> str:
    """A small fixed-width table of one run: method vs popularity, plus efficiency."""
    test = results["metrics"].get("test") or {}
    pop = (results["baselines"].get("popularity") or {}).get("test") or {}
    eff = results["efficiency"]
    mem = eff.get("peak_train_memory_bytes")
    mem_label = "peak GPU mem (MiB)" if eff.get("memory_kind") == "cuda_max_allocated" else "peak RSS (MiB)"
    rows = [
        ("", "HR@10", "NDCG@10", "MRR@10"),
        (
            results["method"],
            _fmt(test.get("hr@10"), ".4f"),
            _fmt(test.get("ndcg@10"), ".4f"),
            _fmt(test.get("mrr@10"), ".4f"),
        ),
        (
            "popularity",
            _fmt(pop.get("hr@10"), ".4f"),
            _fmt(pop.get("ndcg@10"), ".4f"),
            _fmt(pop.get("mrr@10"), ".4f"),
        ),
    ]
    lines = [f"{a:<16}{b:>10}{c:>10}{d:>10}" for a, b, c, d in rows]
    facts = [
        ("dataset", results["dataset"]),
        ("trainable params", f"{eff.get('trainable_params', 0):,}"),
        ("epochs", eff.get("epochs")),
        ("s / epoch (median)", _fmt(eff.get("s_per_epoch"), ".2f")),
        ("sequences / s", _fmt(eff.get("sequences_per_s"), ".0f")),
        (mem_label, _fmt(None if mem is None else mem / 2**20, ".0f")),
        ("val pass (s)", _fmt(eff.get("val_eval_s"), ".2f")),
        ("item tower (ms / item)", _fmt(eff.get("item_latency_ms"), ".3f")),
        (f"user batch of {eff.get('eval_batch_size')} (ms)", _fmt(eff.get("user_batch_latency_ms"), ".1f")),
        ("cache build (s)", _fmt(eff.get("cache_build_s"), ".1f")),
        (
            "cache size (MiB)",
            _fmt(None if eff.get("cache_bytes") is None else eff["cache_bytes"] / 2**20, ".1f"),
        ),
    ]
    lines += [f"{k:<24}{v}" for k, v in facts]
    return "\n".join(lines)
