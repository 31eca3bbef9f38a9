"""experiments/bench_methods.py --tiny: two cached methods and one with its encoders in the
training step, through the real entry point on CPU; the table, the result files, the cache
built once and reused, and --reuse reading the rows back without training."""

import json
from pathlib import Path

import pytest
from conftest import run_console_script

from recsys.report.tpme import tpme

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "bench_methods.py"
METHODS = ["iisan", "frozen", "iisan_uncached"]


def _bench(tmp_path: Path, *extra: str) -> str:
    args = ["--tiny", "--methods", *METHODS, "--out", tmp_path / "out", "--data-dir", tmp_path / "data"]
    return run_console_script("python", [SCRIPT, *args, *extra], tmp_path).stdout


@pytest.mark.slow
def test_tiny_benchmark_table_files_and_cache_reuse(tmp_path):
    out = _bench(tmp_path)
    assert "| method | kind | s/epoch | seq/s | peak train MiB | counted MiB (÷ peak) |" in out
    assert "| iisan s/epoch | 18-20 s | < 1 s |" in out
    assert "cache check: built by ['iisan'], reused by ['frozen'], in-loop runs wrote none: OK" in out

    report = json.loads((tmp_path / "out" / "bench_methods.json").read_text())
    assert report["dataset"] == "synthetic" and report["cache_check"] == {"ok": True, "built_by": ["iisan"]}
    rows = {r["method"]: r for r in report["methods"]}
    assert list(rows) == METHODS
    assert all(r["status"] == "complete" and 0 <= r["tpme"] <= 1 for r in rows.values())
    assert [rows[m]["cache"] for m in METHODS] == ["built", "reused", "none"]
    assert [rows[m]["kind"] for m in METHODS] == ["cached", "cached", "in-loop"]
    assert rows["iisan"]["cache_bytes"] > 0 and rows["iisan_uncached"]["cache_bytes"] is None
    assert all(r["train_memory_bytes"] > 0 and r["train_flops_per_sequence"] > 0 for r in rows.values())
    assert rows["iisan_uncached"]["extrapolated"] and not rows["iisan"]["extrapolated"]
    keys = ("s_per_epoch", "trainable_params", "peak_train_memory_bytes")
    figures = ([r[k] for r in rows.values()] for k in keys)
    assert [r["tpme"] for r in rows.values()] == pytest.approx(tpme(*figures))
    for encoder in report["encoders"].values():
        assert encoder["bare_items_per_s"] > 0 and encoder["cache_items_per_s"] > 0
    markdown = (tmp_path / "out" / "bench_methods.md").read_text()
    assert markdown.startswith("# bench_methods: synthetic") and "bench_methods.py --tiny" in markdown
    assert "| iisan_uncached | in-loop |" in markdown and "cache build vs bare forward" in markdown

    again = _bench(tmp_path, "--reuse")  # rows read back, nothing trained
    assert "[bench] iisan ..." not in again and "| built (earlier run) |" in again
    rerun = json.loads((tmp_path / "out" / "bench_methods.json").read_text())
    assert [r["s_per_epoch"] for r in rerun["methods"]] == [rows[m]["s_per_epoch"] for m in METHODS]
