"""experiments/ablate_recipe.py end to end on a small synthetic dataset: the base and each
change train once per seed through recsys-train, a second call reuses the complete runs, and
the table reports every variant against the base."""

import json
import sys
from pathlib import Path

import pytest
from conftest import CPU_RUN, ID_ONLY, SMALL_SYNTHETIC

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import ablate_recipe  # noqa: E402


def ablate(monkeypatch, tmp_path, *changes: str) -> None:
    base = [*SMALL_SYNTHETIC[1:], f"paths.data_dir={tmp_path / 'data'}", *CPU_RUN, *ID_ONLY]
    argv = ["ablate_recipe.py", "--data", "synthetic", "--work", str(tmp_path / "work"),
            "--out", str(tmp_path / "out"), "--base", *base]
    for change in changes:
        argv += ["--change", change]
    monkeypatch.setattr(sys, "argv", argv)
    ablate_recipe.main()


def test_each_change_is_one_run_beside_the_base_and_reruns_reuse_them(monkeypatch, tmp_path):
    normal = "normal=adapter.init=normal,model.init=normal"
    ablate(monkeypatch, tmp_path, "gelu=model.activation=gelu", normal)
    report = json.loads((tmp_path / "out" / "ablation_synthetic.json").read_text())
    assert list(report["variants"]) == ["base", "gelu", "normal"]
    assert report["variants"]["normal"]["overrides"] == ["adapter.init=normal", "model.init=normal"]
    gelu = json.loads((tmp_path / "work" / "synthetic" / "gelu_s0" / "results.json").read_text())
    assert gelu["config"]["model"]["activation"] == "gelu" and gelu["status"] == "complete"
    table = (tmp_path / "out" / "ablation_synthetic.md").read_text()
    assert "| base | `-` |" in table and "+0.0000" in table and "`model.activation=gelu`" in table

    ablate(monkeypatch, tmp_path, "gelu=model.activation=gelu")  # the same runs again: reused
    assert "skipping" in (tmp_path / "work" / "synthetic" / "gelu_s0.log").read_text()


@pytest.mark.parametrize("change", ["gelu", "gelu=", "base=model.activation=gelu"])
def test_a_malformed_or_repeated_change_is_refused(monkeypatch, tmp_path, change):
    with pytest.raises(SystemExit):
        ablate(monkeypatch, tmp_path, change)
