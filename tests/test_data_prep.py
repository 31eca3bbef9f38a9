"""recsys-prep end to end: console script, reuse / overwrite / rebuild, failures."""

import json
import logging
from pathlib import Path

import pytest
from conftest import job_config, run_console_script

from data_prep.prep import run
from data_prep.readers import RawDataError
from recsys.data.processed import ProcessedDataset


def _compose(shared_data: Path, data_dir: Path, *overrides: str):
    return job_config("prep", [f"paths.shared_data={shared_data}", f"paths.data_dir={data_dir}", *overrides])


def test_console_script_end_to_end(shared_data, tmp_path):
    args = ["data=scientific", f"paths.shared_data={shared_data}", f"paths.data_dir={tmp_path / 'data'}",
            f"hydra.run.dir={tmp_path / 'run'}"]
    run_console_script("recsys-prep", args, tmp_path)
    processed = tmp_path / "data" / "processed" / "scientific"
    dataset = ProcessedDataset.load(processed)
    assert (dataset.num_users, dataset.num_items, dataset.interactions.height) == (
        12_076, 20_314, 81_711)
    stats = json.loads((processed / "stats.json").read_text())
    assert stats["source"]["reader"] == "amazon_iisan"
    assert stats["protocol"] == {"min_interactions": 5, "keep_last": 13}


def test_reuse_overwrite_and_rebuild(shared_data, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cfg = _compose(shared_data, tmp_path, "data=synthetic", "data.raw.n_users=100",
                   "data.raw.n_items=50", "data.raw.n_clusters=5", "data.raw.image_size=8")
    processed = run(cfg)
    assert processed == tmp_path / "processed" / "synthetic"
    image = ProcessedDataset.load(processed).items["image_path"][0]
    assert Path(image).is_file() and Path(image).parent == processed / "images"
    stamp = (processed / "stats.json").stat().st_mtime_ns

    assert run(cfg) == processed and "reusing" in caplog.text
    assert (processed / "stats.json").stat().st_mtime_ns == stamp

    cfg.overwrite = True
    run(cfg)
    assert (processed / "stats.json").stat().st_mtime_ns != stamp

    changed = _compose(shared_data, tmp_path, "data=synthetic", "data.raw.n_users=100",
                       "data.raw.n_items=50", "data.raw.n_clusters=5", "data.raw.image_size=8",
                       "data.protocol.keep_last=6")
    run(changed)
    assert "rebuilding" in caplog.text
    assert ProcessedDataset.load(processed).stats["protocol"]["keep_last"] == 6
    assert sorted(p.name for p in tmp_path.joinpath("processed").iterdir()) == ["synthetic", "synthetic.lock"]


def test_missing_raw_data_leaves_no_directory(tmp_path):
    cfg = _compose(tmp_path / "nowhere", tmp_path / "data", "data=movielens")
    with pytest.raises(RawDataError, match="data_prep/README.md"):
        run(cfg)
    assert [p.name for p in (tmp_path / "data" / "processed").iterdir()] == ["movielens.lock"]


def test_bad_record_aborts_without_partial_output(tmp_path):
    users = tmp_path / "users.tsv"
    users.write_text("u1\tA1 A1 A1 A1 A1\nu2\tA1 A2 A1 A1 A1\n")
    (tmp_path / "items.tsv").write_text("A1\ttitle\n")
    overrides = ["data=scientific", f"data.raw.users_file={users}",
                 f"data.raw.items_file={tmp_path / 'items.tsv'}"]
    cfg = _compose(tmp_path, tmp_path / "data", *overrides)
    with pytest.raises(RawDataError, match=f"{users}:2: item 'A2'"):
        run(cfg)
    assert [p.name for p in (tmp_path / "data" / "processed").iterdir()] == ["scientific.lock"]
    skipped = run(_compose(tmp_path, tmp_path / "data", *overrides, "data.on_error=skip"))
    stats = ProcessedDataset.load(skipped).stats
    assert stats["dropped"]["unknown_item"] == 1 and stats["interactions"] == 5
