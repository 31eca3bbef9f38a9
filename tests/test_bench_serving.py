"""experiments/bench_serving.py in its smoke mode: a tiny MovieLens run and a 5,000-item
synthetic catalogue through every format and index, each row with recall, speed, size and
(MovieLens) test metrics through the index."""

import json
from pathlib import Path

import pytest
from conftest import run_console_script

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_serving_benchmark_smoke_covers_every_format_and_index(tmp_path, shared_data):
    pytest.importorskip("faiss")
    run_console_script("python", [ROOT / "experiments" / "bench_serving.py", "--smoke", "--work-dir",
                                  tmp_path / "work", "--out", tmp_path / "out"], ROOT,
                       env={"RECSYS_SHARED_DATA": str(shared_data)})
    result = json.loads((tmp_path / "out" / "bench_serving.json").read_text())
    assert [c["name"] for c in result["catalogues"]] == ["movielens", "synthetic"]
    for catalogue in ("movielens", "synthetic"):
        rows = [r for r in result["rows"] if r["catalogue"] == catalogue]
        kinds = {r["format"] for r in rows} | {r["index"]["kind"] for r in rows if r["index"]}
        assert kinds == {"float32", "float16", "int8", "binary", "flat", "hnsw", "ivf_flat", "ivf_pq"}
        exact, flat = rows[0], next(r for r in rows if r["setting"] == "faiss flat")
        assert exact["setting"] == "exact" and exact["recall@10"] == 1.0 and flat["recall@10"] == 1.0
        assert all(0 <= r["recall@10"] <= 1 and r["table_bytes"] > 0 for r in rows)
        assert all(r[b]["qps"] > 0 and 0 < r[b]["p50_ms"] <= r[b]["p99_ms"] for r in rows
                   for b in ("batch_1", "batch_256"))
    movielens = [r for r in result["rows"] if r["catalogue"] == "movielens"]
    evaluator = result["catalogues"][0]["exact_evaluator"]
    assert movielens[0]["test_hr@10"] == evaluator["test_hr@10"]  # the exact path ranks as the evaluator
    assert "Recall@10 >= 0.95" in (tmp_path / "out" / "bench_serving.md").read_text()
