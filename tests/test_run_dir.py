"""One run directory, one model (recsys.train.run_dir, recsys.train.restore, checkpoint_io):
a retried job continues its run instead of writing best-v1.ckpt beside it; another config is
refused; recsys-eval / recsys-export load exactly the checkpoint results.json records and
refuse a replaced one or changed data, not a cache rebuilt bit-identically; a second process
on a run directory is refused; a failed checkpoint write leaves the previous checkpoint whole
and a failed results.json."""

import errno
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import CPU_RUN, ID_ONLY, SMALL_SYNTHETIC, job_config

from recsys.cache.file_fingerprint import file_sha256
from recsys.cache.manifest import CacheMismatchError
from recsys.cli.evaluate import evaluate
from recsys.cli.train import train
from recsys.locking import exclusive
from recsys.serving.export import export_run
from recsys.train.module import RecommenderModule
from recsys.train.restore import restore_run
from recsys.train.run_dir import RunDirError

TWO_EPOCHS = [*SMALL_SYNTHETIC, *CPU_RUN, *ID_ONLY, "trainer.max_epochs=2", "~callbacks.early_stopping"]


def _train(tmp_path: Path, run: Path, *extra: str) -> dict:
    return train(job_config("train", [f"paths.data_dir={tmp_path / 'data'}", *TWO_EPOCHS, *extra], run))


def _evaluate(run: Path, *overrides: str) -> dict:
    """What ``recsys-eval run_dir=<run> stages=[test] <overrides>`` does."""
    cfg = job_config("eval", [f"run_dir={run}", "accelerator=cpu", "stages=[test]", *overrides])
    return evaluate(run, cfg.checkpoint, list(cfg.stages), cfg)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(tmp dir, run dir, results) of a complete two-epoch ID-SASRec run."""
    tmp_path = tmp_path_factory.mktemp("run_dir")
    run = tmp_path / "run"
    return tmp_path, run, _train(tmp_path, run)


def test_results_record_the_checkpoint_files_their_hashes_and_the_inputs(finished):
    _, run, results = finished
    saved = json.loads((run / "results.json").read_text())
    assert set(saved["checkpoints"]) == {"best", "last"}
    for entry in saved["checkpoints"].values():
        assert file_sha256(run / entry["file"]) == entry["sha256"]
    assert saved["inputs"]["data_fingerprint"] and saved["inputs"]["cache_fingerprints"] == {}
    state = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert state["inputs"] == saved["inputs"]  # the checkpoint knows what it learnt from
    assert _evaluate(run)["test"] == pytest.approx(saved["metrics"]["test"])


def test_a_retried_job_continues_its_run_and_never_writes_a_second_best(tmp_path: Path, monkeypatch):
    def crash_in_epoch_1(module):
        if module.current_epoch == 1:
            raise RuntimeError("node lost")

    monkeypatch.setattr(RecommenderModule, "on_train_epoch_start", crash_in_epoch_1)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="node lost"):
        _train(tmp_path, run)  # dies after epoch 0's best.ckpt and last.ckpt
    monkeypatch.undo()
    retried = _train(tmp_path, run)  # the same job again, no ckpt_path: existing_run=resume
    assert retried["config"]["ckpt_path"] == str(run / "checkpoints" / "last.ckpt")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert retried["efficiency"]["epochs"] == 2  # epoch 0 from the checkpoint, epoch 1 trained now
    assert len(retried["efficiency"]["epoch_seconds"]) == 2
    assert _evaluate(run)["test"] == pytest.approx(retried["metrics"]["test"])  # the model reported


def test_results_count_every_epoch_when_the_best_checkpoint_is_an_early_one(tmp_path: Path):
    """Testing best.ckpt restores its callback states: the epoch records must survive that."""
    frozen = _train(tmp_path, tmp_path / "run", "trainer.max_epochs=3", "optimizer.lr.other=1e-12")
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == 0  # a step of 1e-12 changes no rank: epoch 0 stays the best
    assert frozen["efficiency"]["epochs"] == 3 and len(frozen["efficiency"]["epoch_seconds"]) == 3


def test_another_config_in_a_used_run_dir_is_refused_and_nothing_is_written(tmp_path: Path, finished):
    data, run, _ = finished
    before = {p: p.read_bytes() for p in [run / "results.json", *(run / "checkpoints").iterdir()]}
    # the seed, and the training subsample's seed that follows it (data.subsample.seed: ${seed})
    changed = (r"made with another config:\n  data.subsample.seed: saved 42, this job 7\n"
               r"  seed: saved 42, this job 7")
    with pytest.raises(RunDirError, match=changed):
        _train(data, run, "seed=7")
    with pytest.raises(RunDirError, match="of a complete run with this config: skip_complete=true"):
        _train(data, run, "skip_complete=false")
    with pytest.raises(RunDirError, match="existing_run=refuse"):
        _train(data, run, "seed=7", "existing_run=refuse")
    assert {p: p.read_bytes() for p in before} == before


def test_overwrite_discards_the_old_run(tmp_path: Path):
    run = tmp_path / "run"
    _train(tmp_path, run, "trainer.max_epochs=1")
    (run / "eval.json").write_text("{}")
    again = _train(tmp_path, run, "trainer.max_epochs=1", "seed=7", "existing_run=overwrite")
    assert again["config"]["ckpt_path"] is None and again["seed"] == 7
    assert not (run / "eval.json").exists()
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["hyper_parameters"]["seed"] == 7


def test_a_replaced_checkpoint_is_refused_unless_named_explicitly(tmp_path: Path, finished):
    _, run, _ = finished
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    best = copy / "checkpoints" / "best.ckpt"
    other = torch.load(best, map_location="cpu", weights_only=True)  # another model in its place
    other["state_dict"] = {k: v + 1 if v.is_floating_point() else v for k, v in other["state_dict"].items()}
    torch.save(other, best)
    with pytest.raises(RunDirError, match="is not the 'best' checkpoint .* reports"):
        restore_run(copy)
    with pytest.raises(RunDirError, match="is not the 'best' checkpoint"):
        export_run(copy, tmp_path / "export")
    assert not (tmp_path / "export").exists()
    assert restore_run(copy, str(best)).checkpoint == best  # a file named explicitly is taken as given


def test_eval_refuses_a_re_prepared_dataset_unless_told_to_go_on(tmp_path: Path):
    run = tmp_path / "run"
    _train(tmp_path, run, "trainer.max_epochs=1")
    reprep = job_config("prep", [f"paths.data_dir={tmp_path / 'data'}", *SMALL_SYNTHETIC, "data.raw.seed=5",
                                 "overwrite=true"])
    from data_prep.prep import run as prep

    prep(reprep)  # the same processed_dir, other data
    with pytest.raises(RunDirError, match=r"trained on other data .*\n  data_fingerprint: "):
        _evaluate(run)
    out = _evaluate(run, "on_changed_inputs=warn")
    assert out["changed_inputs"] and out["changed_inputs"][0].startswith("data_fingerprint: ")
    assert json.loads((run / "eval.json").read_text())["changed_inputs"] == out["changed_inputs"]


def test_a_second_process_on_a_run_dir_is_refused_and_writes_nothing(tmp_path: Path, run_cli):
    run = tmp_path / "run"
    with exclusive(run / ".lock", "a training run"):  # the first process, still training
        out = run_cli("recsys-train", [f"paths.data_dir={tmp_path / 'data'}", *TWO_EPOCHS,
                                       f"hydra.run.dir={run}"], tmp_path, expect=2)
    assert f"run directory {run} is being written by another process" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (run / "results.json").exists() and not (run / "checkpoints").exists()


def test_a_mistyped_run_dir_is_refused_and_not_created(tmp_path: Path, run_cli):
    for script in ("recsys-eval", "recsys-export"):
        out = run_cli(script, [f"run_dir={tmp_path / 'nope'}"], tmp_path, expect=2)
        assert f"run_dir {tmp_path / 'nope'} is not a directory" in out.stderr
    assert not (tmp_path / "nope").exists()


def test_a_failed_checkpoint_write_keeps_the_last_whole_one_and_writes_a_failed_results_json(
    tmp_path: Path, monkeypatch
):
    save = torch.save
    saves = []

    def disk_full_on_the_third_file(obj, target, *args, **kwargs):
        """Epoch 1 writes best + last; then the disk is full halfway through a file."""
        if isinstance(target, io.BufferedWriter):
            saves.append(target.name)
            if len(saves) == 3:
                target.write(b"PK\3\4" + b"\0" * 1000)
                raise OSError(errno.ENOSPC, "No space left on device")
        return save(obj, target, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_on_the_third_file)
    run = tmp_path / "run"
    with pytest.raises(OSError, match="No space left"):
        _train(tmp_path, run)
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "failed" and "No space left on device" in results["error"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # no temp
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 0  # epoch 0's whole checkpoint
    assert results["checkpoints"]["last"]["sha256"] == file_sha256(run / "checkpoints" / "last.ckpt")


def test_eval_refuses_a_cache_rebuilt_differently_after_training(tmp_path: Path):
    data = [f"paths.data_dir={tmp_path / 'data'}", *SMALL_SYNTHETIC]
    text_iisan = ["adapter=iisan_intra", "encoder/image=none", "trainer.accelerator=cpu", "logger=none",
                  "trainer.max_epochs=1", "cache.progress_bar=false"]
    run = tmp_path / "run"
    train(job_config("train", [*data, *text_iisan], run))
    from recsys.cli.cache import run as build_caches

    build_caches(job_config("cache", [*data, "encoder/image=none", "encoder.text.pooling=cls",
                                      "cache.progress_bar=false"]))  # same file, other features
    with pytest.raises(RunDirError, match=r"other data or caches .*\n  cache_fingerprints\.text: "):
        _evaluate(run)


def test_a_run_outlives_a_bit_identical_rebuild_of_its_cache(tmp_path: Path):
    """Media re-laid out with new mtimes: the cache is rebuilt (stat fingerprint) with the same
    bytes, and the run is still evaluated, on its dtype and on another one, as trained."""
    from recsys.cli.cache import run as build_caches

    data = [f"paths.data_dir={tmp_path / 'data'}", *SMALL_SYNTHETIC, "encoder/text=none",
            "cache.progress_bar=false", "encoder.image.resolution=64"]
    run = tmp_path / "run"
    results = train(job_config("train", [*data, *CPU_RUN, "adapter=iisan_intra"], run))
    images = sorted((tmp_path / "data").rglob("*.png"))
    assert images
    for image in images:
        os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    with pytest.raises(CacheMismatchError, match="other media files"):
        _evaluate(run)
    rebuilt = build_caches(job_config("cache", data))["image"]
    assert rebuilt["same_features_as"] == [results["inputs"]["cache_fingerprints"]["image"]]
    assert _evaluate(run)["test"] == pytest.approx(results["metrics"]["test"])
    build_caches(job_config("cache", [*data, "cache.dtype=int8"]))
    assert restore_run(run, cache_dtype="int8").changed_inputs == []


def test_a_run_made_before_a_key_existed_is_the_same_run_as_its_old_behaviour():
    from recsys.train.run_dir import ADDED_KEYS, config_changes

    job = {"seed": 0, "adapter": {"name": "iisan", "modality_dropout": 0.0},
           "eval": {"ks": [10], "modalities": None, "modality_subsets": None},
           "prune": {"gate_threshold": None}}
    before = {"seed": 0, "adapter": {"name": "iisan"}, "eval": {"ks": [10]}}  # saved before the keys existed
    assert set(ADDED_KEYS) == {"adapter.modality_dropout", "eval.modalities", "eval.modality_subsets",
                               "prune.gate_threshold"}
    assert config_changes(before, job) == []
    dropout = {**job, "adapter": {"name": "iisan", "modality_dropout": 0.3}}
    assert config_changes(before, dropout) == ["adapter.modality_dropout: saved <absent>, this job 0.3"]
    saved_with_key = {**before, "adapter": {"name": "iisan", "modality_dropout": 0.3},
                      "prune": {"gate_threshold": None}}
    assert config_changes(saved_with_key, job) == ["adapter.modality_dropout: saved 0.3, this job 0.0"]
    assert config_changes(job, before) != []  # a job without a key the saved run has is another config
