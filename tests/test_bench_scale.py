"""experiments/bench_scale.py at a tiny size: every stage runs through the real entry points
and the report names each stage with its time and peak memory."""

import json
from pathlib import Path

import pytest
from conftest import run_console_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_scale_benchmark_runs_every_stage(tmp_path):
    args = ["--items", "2000", "--users", "600", "--train-steps", "4", "--eval-batches", "1",
            "--topk-users", "64", "--accelerator", "cpu", "--data-dir", str(tmp_path / "data"),
            "--out", str(tmp_path / "out")]
    run_console_script("python", [ROOT / "experiments" / "bench_scale.py", *args], ROOT)
    result = json.loads((tmp_path / "out" / "bench_scale.json").read_text())
    assert [s["stage"] for s in result["stages"]] == ["prep", "cache", "train", "export", "topk"]
    assert all(s["seconds"] > 0 and s["peak_rss_gib"] > 0 for s in result["stages"])
    assert "exact top-10" in (tmp_path / "out" / "bench_scale.md").read_text()
