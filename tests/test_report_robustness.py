"""recsys.report.robustness: quality per modality subset over a sweep of results.json files
(metrics.test_by_modalities), with and without modality dropout, in recsys-report."""

import json
from pathlib import Path

import pytest

from recsys.cli.report import main
from recsys.report.robustness import load_pruning, load_subset_metrics, pruning_table, subset_tables

SUBSETS = ("image+text", "text", "image")


def write_run(run_dir: Path, method: str, dropout: float | None, seed: int, ndcg: dict, status="complete",
              pruning: dict | None = None):
    """A results.json as recsys-train writes one with eval.modality_subsets (only what the
    report reads); ``dropout`` None: a config from before adapter.modality_dropout existed."""
    adapter = {"name": method} | ({} if dropout is None else {"modality_dropout": dropout})
    by_subset = {s: {"hr@10": 2 * v, "ndcg@10": v} for s, v in ndcg.items()}
    results = {"status": status, "method": method, "adapter": method, "dataset": "movielens", "seed": seed,
               "metrics": {"val": {"hr@10": 0.2}, "test": {"hr@10": 0.2, "ndcg@10": 0.1},
                           "test_by_modalities": by_subset},
               "efficiency": {}, "config": {"adapter": adapter}, "pruning": pruning}
    run_dir.mkdir(parents=True)
    (run_dir / "results.json").write_text(json.dumps(results))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    job = iter(range(100))
    for method in ("iisan", "crossan"):
        for dropout in (0.0, 0.3):
            for seed in (0, 1):
                base = 0.1 + dropout / 10 + seed / 100
                write_run(tmp_path / str(next(job)), method, dropout, seed,
                          {"image+text": base, "text": base - 0.02, "image": base - 0.05 + dropout / 10})
    write_run(tmp_path / "old", "id", None, 0, {"image+text": 0.05})  # before modality_dropout: 0
    write_run(tmp_path / "failed", "iisan", 0.0, 2, {"text": 0.9}, status="failed")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{trunc")
    return tmp_path


def test_subset_rows_and_tables(sweep: Path):
    rows = load_subset_metrics(sweep)
    assert rows.height == 2 * 2 * 2 * 3 + 1  # failed and unreadable runs left out
    assert rows["subset"].unique(maintain_order=True).to_list() == list(SUBSETS)
    assert rows.filter(method="id")["modality_dropout"].to_list() == [0.0]
    text = subset_tables(rows)
    assert text.count("## Quality per modality subset: movielens") == 2  # HR@10 and NDCG@10
    assert "| method | modality dropout | seeds | image+text | text | image |" in text
    ndcg = text.split("NDCG@10")[1]
    assert "| crossan | 0.3 | 2 | 0.1350 ± 0.0071 | 0.1150 ± 0.0071 | 0.1150 ± 0.0071 |" in ndcg
    assert "| iisan | 0 | 2 | 0.1050 ± 0.0071 | 0.0850 ± 0.0071 | 0.0550 ± 0.0071 |" in ndcg
    assert "| id | 0 | 1 | 0.0500 | - | - |" in ndcg  # one seed: no std; untested subsets: '-'
    assert subset_tables(rows.clear()) == ""


def test_recsys_report_adds_the_section(sweep: Path, tmp_path: Path, capsys):
    main([str(sweep), "--out", str(tmp_path / "report")])
    assert "## Quality per modality subset: movielens, HR@10" in capsys.readouterr().out
    assert "| iisan | 0.3 | 2 | 0.2700 ± 0.0141 |" in (tmp_path / "report" / "report.md").read_text()


def pruning(image_gate: float, threshold: float, ndcg_pruned: float) -> dict:
    """results.json ``pruning`` as recsys.train.modality_eval writes it (two modalities)."""
    pruned = ["image"] if image_gate < threshold else []
    saving = {"all": 100.0, "pruned": 60.0 if pruned else 100.0, "saved": 40.0 if pruned else 0.0,
              "saved_fraction": 0.4 if pruned else 0.0}
    return {"threshold": threshold, "gate_weights": {"text": 1 - image_gate, "image": image_gate},
            "pruned": pruned, "kept": ["text"] if pruned else ["text", "image"],
            "test": {"ndcg@10": ndcg_pruned},
            "cost_saved": {"item_flops_per_item": saving, "feature_bytes": saving}}


def test_gate_pruning_table(tmp_path: Path):
    write_run(tmp_path / "a", "crossan", 0.0, 0, {}, pruning=pruning(0.2, 0.3, 0.03))
    write_run(tmp_path / "b", "crossan", 0.0, 1, {}, pruning=pruning(0.4, 0.3, 0.1))  # kept both
    write_run(tmp_path / "c", "crossan", 0.3, 0, {}, pruning=pruning(0.45, 0.5, 0.07))
    write_run(tmp_path / "plain", "crossan", 0.0, 2, {"image+text": 0.1})  # no pruning: left out
    write_run(tmp_path / "failed", "crossan", 0.0, 3, {}, status="failed", pruning=pruning(0.1, 0.3, 0.0))
    rows = load_pruning(tmp_path)
    assert sorted(r["run_dir"] for r in rows) == ["a", "b", "c"]
    text = pruning_table(rows)
    assert text.startswith("## Gate pruning")
    assert ("| movielens | crossan | 0 | 0.3 | 2 | text 0.7000 ± 0.1414, image 0.3000 ± 0.1414 "
            "| image (1), none (1) | 0.1000 ± 0.0000 | 0.0650 ± 0.0495 | 20.0% | 20.0% |") in text
    assert ("| movielens | crossan | 0.3 | 0.5 | 1 | text 0.5500, image 0.4500 | image (1) "
            "| 0.1000 | 0.0700 | 40.0% |") in text
    assert pruning_table([]) == ""
    main([str(tmp_path), "--out", str(tmp_path / "report")])
    assert "## Gate pruning" in (tmp_path / "report" / "report.md").read_text()
