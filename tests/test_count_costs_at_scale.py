"""experiments/count_costs_at_scale.py --tiny: the faithful-scale cost count on tiny encoders,
through the same builders as recsys-train; the rows, the scaling check and the ratios."""

import json
from pathlib import Path

import pytest
from conftest import run_console_script

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "count_costs_at_scale.py"


@pytest.mark.slow
def test_tiny_count_orders_fft_iisan_and_id_and_checks_its_scaling(tmp_path):
    args = ["--tiny", "--methods", "fft", "iisan", "id", "--batch-size", "8", "--probe-size", "2",
            "--probes", "4", "--out", tmp_path / "out", "--data-dir", tmp_path / "data"]
    out = run_console_script("python", [SCRIPT, *args], tmp_path).stdout
    assert "FFT : IISAN, counted: training memory" in out and "47 GB : 3 GB = 15.7x" in out
    report = json.loads((tmp_path / "out" / "costs_at_scale.json").read_text())
    rows = {r["method"]: r for r in report["methods"]}
    assert list(rows) == ["fft", "iisan", "id"] and report["batch_size"] == 8
    fft, iisan, ident = rows["fft"], rows["iisan"], rows["id"]
    for key in ("train_flops_per_sequence", "train_memory_bytes"):
        assert fft[key] > iisan[key] > ident[key], key
    for row in rows.values():
        assert row["train_memory_bytes"] == (
            row["model_state_bytes"] + row["peak_activation_bytes"] + row["feature_bytes"])
        assert row["train_flops_per_step"] == pytest.approx(8 * row["train_flops_per_sequence"])
    # counted whole where cheap (no encoder in the step), the scaled estimate checked against it
    assert "scaling_error" in iisan and "scaling_error" in ident and "scaling_error" not in fft
    assert abs(iisan["scaling_error"]["train_flops_per_step"]) < 0.5
    assert (tmp_path / "out" / "costs_at_scale.md").read_text().startswith(
        "# Counted costs at scale: tiny synthetic data")

    again = ["--tiny", "--methods", "id", "--batch-size", "8", "--probe-size", "2", "--probes", "4",
             "--out", tmp_path / "out", "--data-dir", tmp_path / "data", "--update"]
    run_console_script("python", [SCRIPT, *again], tmp_path)
    updated = json.loads((tmp_path / "out" / "costs_at_scale.json").read_text())
    assert [r["method"] for r in updated["methods"]] == ["fft", "iisan", "id"]
    assert updated["methods"][0] == rows["fft"]  # kept, not recounted
