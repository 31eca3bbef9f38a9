"""Faults: a cache build and a training run killed with SIGKILL resume to exactly what an
uninterrupted run gives; SIGTERM / SIGINT leave an 'interrupted' results.json; a killed run
(no results.json) is still evaluated from its checkpoint, which carries the config;
checkpoints load without unpickling code; a config from a run directory naming code is
refused with no side effect; config typos and bad values are clear errors before any work.
(Bad data records, media and caches: see docs/faults.md for where each is tested.)"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import BIN, CLI_ENV, job_config
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from recsys.cache.file_fingerprint import file_sha256
from recsys.cli import compose
from recsys.config.schema import ConfigError
from recsys.train.checkpoint_io import load_checkpoint
from recsys.train.restore import restore_run

# ~370 steps per epoch (batch 8): long enough to be killed inside one; two epochs, so a run killed
# in its last epoch has one checkpointed epoch behind it and one to resume.
LONG_EPOCHS = ["data.raw.n_users=3000", "data.raw.n_items=80", "data.raw.max_length=12", "data.batch_size=8",
               "trainer.max_epochs=2", "trainer.deterministic=true", "~callbacks.early_stopping"]


def _start(args: list, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "recsys-train"), *map(str, args)], cwd=cwd, env=os.environ | CLI_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(ready, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Poll until ``ready()`` holds; fail if ``proc`` ended first."""
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    ended = proc.poll() is not None
    assert not ended, f"the process ended before it could be interrupted:\n{proc.stderr.read()[-3000:]}"


@pytest.mark.slow
def test_cache_build_killed_midway_resumes_byte_identical(tmp_path: Path, run_cli):
    data = [f"paths.data_dir={tmp_path / 'data'}", "data=synthetic", "data.raw.n_users=400",
            "data.raw.n_items=600"]
    run_cli("recsys-prep", data, tmp_path)
    cache = tmp_path / "data" / "cache" / "synthetic"
    args = [*data, "encoder/image=none", "encoder.text.batch_size=16", "cache.progress_bar=false"]
    proc = subprocess.Popen([str(BIN / "recsys-cache"), *args], cwd=tmp_path, env=os.environ | CLI_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    progress = cache / "minilm.progress.json"
    _wait_for(lambda: progress.exists() and json.loads(progress.read_text())["done"] >= 64, proc)  # rows
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cache / "minilm.npy").exists() and (cache / "minilm.npy.partial").exists()
    done = json.loads(progress.read_text())["done"]
    assert 0 < done < 400, "the build was not killed midway"

    run_cli("recsys-cache", args, tmp_path)  # resumes
    resumed = (cache / "minilm.npy").read_bytes()
    for name in ("minilm.npy", "minilm.json"):
        (cache / name).unlink()
    run_cli("recsys-cache", args, tmp_path)  # from scratch
    assert (cache / "minilm.npy").read_bytes() == resumed


@pytest.mark.slow
def test_training_killed_mid_epoch_resumes_to_the_uninterrupted_result(
    tmp_path: Path, run_cli, small_synthetic, cpu_run, id_only
):
    common = [f"paths.data_dir={tmp_path / 'data'}", *small_synthetic, *cpu_run, *id_only, *LONG_EPOCHS]
    run_cli("recsys-train", [*common, f"hydra.run.dir={tmp_path / 'whole'}"], tmp_path)
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())

    killed = tmp_path / "killed"
    last = killed / "checkpoints" / "last.ckpt"
    proc = _start([*common, f"hydra.run.dir={killed}"], tmp_path)
    started = []  # into the second epoch: 0.5 s after epoch 0's checkpoint appeared
    _wait_for(lambda: last.exists() and (started or started.append(time.monotonic()))
              and time.monotonic() - started[0] > 0.5, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "results.json").exists(), "the run finished before it could be killed"
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["epoch"] == 0  # killed during epoch 1 (0-based), after epoch 0's checkpoint
    assert state["hyper_parameters"]["adapter"]["name"] == "id"  # the config travels in checkpoints

    # No results.json: the run is restored from the config its checkpoint carries, and evaluated.
    evaluate = [f"run_dir={killed}", "checkpoint=last", "stages=[val]", "accelerator=cpu"]
    run_cli("recsys-eval", evaluate, tmp_path)
    assert json.loads((killed / "eval.json").read_text())["val"]["hr@10"] > 0

    run_cli("recsys-train", [*common, f"ckpt_path={last}", f"hydra.run.dir={killed}"], tmp_path)
    resumed = json.loads((killed / "results.json").read_text())
    # Really resumed: epoch 0's record is the killed process's, read back from its checkpoint,
    # and the run reports every epoch, as the uninterrupted one does.
    saved = next(v for v in state["callbacks"].values() if "epoch_seconds" in v)["epoch_seconds"]
    assert len(saved) == 1 and resumed["efficiency"]["epoch_seconds"][0] == saved[0]
    assert resumed["efficiency"]["epochs"] == whole["efficiency"]["epochs"]
    assert resumed["metrics"]["val"] == whole["metrics"]["val"]
    assert resumed["metrics"]["test"] == whole["metrics"]["test"]


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_write_an_interrupted_results_json(stop, status, tmp_path: Path, small_synthetic,
                                                              cpu_run, id_only):
    run_dir = tmp_path / "run"
    args = [f"paths.data_dir={tmp_path / 'data'}", *small_synthetic, *cpu_run, *id_only, *LONG_EPOCHS,
            "data.raw.n_users=1000", f"hydra.run.dir={run_dir}"]  # epoch 0 of 2 ends, then the signal
    proc = _start(args, tmp_path)
    _wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), proc)  # training, epoch 1
    proc.send_signal(stop)
    assert proc.wait(timeout=120) == status, proc.stderr.read()[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted" and results["signal"] == stop.name
    assert results["error"] is None and results["metrics"]["test"] is None


def _hostile_runs(tmp_path: Path, marker: Path) -> dict[str, Path]:
    """Run directories whose stored config names code to run (each would create ``marker``)."""
    ids_only = ["adapter=id", "encoder/text=none", "encoder/image=none"]
    config = OmegaConf.to_container(job_config("train", ids_only, output_dir=tmp_path), resolve=True)
    evil = {"_target_": "os.system", "command": f"touch {marker}"}
    variants = {
        "callback": {**config, "callbacks": {**config["callbacks"], "evil": evil}},
        "trainer": {**config, "trainer": {**config["trainer"], "_target_": "os.system"}},
        "model": {**config, "model": {**config["model"], **evil}},
        "weights": {**config, "adapter": {"name": "frozen", "modalities": ["text"]},
                    "encoder": {**config["encoder"], "text": {"kind": "hf_text", "name": "x",
                                                              "name_or_path": "pkg:os:system"}}},
    }
    variants["killed"] = variants["callback"]  # a run killed before results.json: its checkpoint only
    runs = {}
    for name, cfg in variants.items():
        runs[name] = tmp_path / name
        best = runs[name] / "checkpoints" / "best.ckpt"
        best.parent.mkdir(parents=True)
        torch.save({"state_dict": {}, "hyper_parameters": cfg}, best)  # the config a checkpoint carries
        if name != "killed":
            record = {"best": {"file": "checkpoints/best.ckpt", "sha256": file_sha256(best)}}
            (runs[name] / "results.json").write_text(
                json.dumps({"status": "complete", "config": cfg, "checkpoints": record})
            )
    return runs


REFUSALS = {
    "callback": "callbacks.evil._target_: 'os.system' is not a class this framework builds",
    "trainer": "trainer._target_: 'os.system' is not a class this framework builds",
    "model": "model._target_: unknown key",
    "weights": "encoder.text.name_or_path: 'pkg:os:system' is not a known weights package",
    "killed": "callbacks.evil._target_: 'os.system' is not a class this framework builds",
}


def test_run_directories_that_name_code_are_refused_without_side_effects(tmp_path: Path):
    marker = tmp_path / "pwned"
    for name, run_dir in _hostile_runs(tmp_path, marker).items():
        with pytest.raises(ConfigError, match="invalid train config") as refused:
            restore_run(run_dir)  # what recsys-eval and recsys-export do first
        assert REFUSALS[name] in str(refused.value), str(refused.value)
        assert not marker.exists(), f"restoring {name} ran its code"


@pytest.mark.slow
def test_eval_and_export_refuse_a_hostile_run_with_exit_status_2(tmp_path: Path, run_cli):
    marker = tmp_path / "pwned"
    run_dir = _hostile_runs(tmp_path, marker)["callback"]
    for script in ("recsys-eval", "recsys-export"):
        out = run_cli(script, [f"run_dir={run_dir}"], tmp_path, expect=2)
        assert REFUSALS["callback"] in out.stderr
        assert not marker.exists() and not (run_dir / "eval.json").exists()
        assert not (run_dir / "export").exists()


class Payload:
    """Unpickling this runs code: what a weights_only load must refuse."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoints_with_code_are_refused(tmp_path: Path):
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": {}, "evil": Payload()}, path)
    with pytest.raises(Exception, match="Weights only load failed"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("override", "error", "message"),
    [
        ("adapter=iisn", MissingConfigException, "Available options in 'adapter'"),
        ("adapter.botleneck=32", ConfigCompositionException, "Key 'botleneck' is not in struct"),
        ("data=scientifc", MissingConfigException, "scientific"),
    ],
)
def test_config_typos_are_clear_errors(override, error, message):
    with pytest.raises(error) as raised:
        compose("train", [override])
    assert message in str(raised.value) + str(raised.value.__cause__)


@pytest.mark.slow
def test_a_bad_value_stops_every_entry_point_before_any_work(tmp_path: Path, run_cli):
    data = tmp_path / "data"
    for script, args in (("recsys-train", ["cache.dtype=int4", "adapter.fusion=gatd"]),
                         ("recsys-cache", ["cache.dtype=int4"]),
                         ("recsys-prep", ["data.protocol.window=0"])):
        paths = [f"paths.data_dir={data}", f"hydra.run.dir={tmp_path / script}"]
        out = run_cli(script, [*paths, *args], tmp_path, expect=2)
        assert "Traceback" not in out.stderr
        assert ("cache.dtype: 'int4': Input should be 'float16', 'float32', 'bfloat16'" in out.stderr
                or "data.protocol.window: 0: Input should be greater than 0" in out.stderr), out.stderr
        assert not data.exists(), f"{script} prepared data before refusing its config"
