"""experiments/bench_quantised_cache.py --smoke: float16 and int8 runs through recsys-train on
the small synthetic dataset, int8 converted from the float16 cache, both reported against
float16, the float16 run also tested on int8 features (recsys-eval cache_dtype), and a second call
reuses the complete runs."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import bench_quantised_cache  # noqa: E402


@pytest.mark.slow
def test_smoke_mode_reports_each_dtype_against_float16_and_reuses_the_runs(tmp_path):
    argv = ["--smoke", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
            "--overrides", f"paths.data_dir={tmp_path / 'data'}", f"paths.root_dir={tmp_path}"]
    bench_quantised_cache.main(argv)
    report = json.loads((tmp_path / "out" / "synthetic.json").read_text())
    float16, int8 = report["dtypes"]["float16"], report["dtypes"]["int8"]
    assert list(report["dtypes"]) == ["float16", "int8"] and report["seeds"] == [0]
    scales = 4 * 7 * 384  # float32 [1, 7, 384]: one scale per layer and column
    assert int8["feature_bytes"] == float16["feature_bytes"] // 2 + scales  # the resident int8 store: half
    assert int8["cache_bytes"] < float16["cache_bytes"]  # + float32 scales [1, 7, 384]: 60 items only
    assert float16["ndcg@10 vs float16"] == 0 and 0 < int8["test ndcg@10"][0] < 1
    assert float16["val ndcg@10 vs float16"] == 0 and 0 < int8["val ndcg@10"][0] < 1
    assert (tmp_path / "data" / "cache" / "synthetic" / "int8" / "minilm.scales.npy").is_file()
    table = (tmp_path / "out" / "synthetic.md").read_text()
    assert "| int8 |" in table and "| float16 |" in table and "+0.00%" in table
    # The float16 run tested on int8 features: recsys-eval's figures, against its own.
    served = report["served"]["int8"]
    evaluated = json.loads((tmp_path / "work" / "synthetic" / "float16_s0" / "eval.json").read_text())
    assert evaluated["cache_dtype"] == "int8"
    assert served["test ndcg@10"] == [evaluated["test"]["ndcg@10"], 0.0]
    own = float16["test ndcg@10"][0]
    assert served["test ndcg@10 vs float16"][0] == pytest.approx(evaluated["test"]["ndcg@10"] / own - 1)
    assert list(report["served"]) == ["int8"] and "## Quantisation alone" in table

    bench_quantised_cache.main(argv)  # the same runs again: reused
    assert "skipping" in (tmp_path / "work" / "synthetic" / "int8_s0.log").read_text()
