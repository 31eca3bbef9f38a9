"""Faults: a cache build and a training run killed with SIGKILL resume to exactly what an
uninterrupted run gives; checkpoints load without unpickling code; config typos are clear
errors. (Bad data records, media and caches: see docs/faults.md for where each is tested.)"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, MissingConfigException

from recsys.cli import CONF_DIR
from recsys.train.restore import load_checkpoint

BIN = Path(sys.executable).parent
ENV = os.environ | {"WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
TINY = [
    "data=synthetic",
    "data.raw.n_users=3000",
    "data.raw.n_items=80",
    "data.raw.n_clusters=6",
    "data.raw.max_length=12",
    "data.batch_size=8",  # ~370 steps per epoch: long enough to be killed inside one
    "adapter=id",
    "encoder/text=none",
    "encoder/image=none",
    "logger=none",
    "trainer.max_epochs=3",
    "trainer.accelerator=cpu",
    "trainer.deterministic=true",
    "~callbacks.early_stopping",
]


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (fails if it ended first)."""
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_cache_build_killed_midway_resumes_byte_identical(tmp_path: Path):
    data = [f"paths.data_dir={tmp_path / 'data'}", "data=synthetic", "data.raw.n_users=400",
            "data.raw.n_items=600"]
    subprocess.run([str(BIN / "recsys-prep"), *data], cwd=tmp_path, env=ENV, check=True, capture_output=True)
    cache = tmp_path / "data" / "cache" / "synthetic"
    cmd = [str(BIN / "recsys-cache"), *data, "encoder/image=none", "encoder.text.batch_size=16",
           "cache.progress_bar=false"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = cache / "minilm.progress.json"
    _kill_when(proc, lambda: progress.exists() and json.loads(progress.read_text())["done"] >= 64)  # rows
    assert not (cache / "minilm.npy").exists() and (cache / "minilm.npy.partial").exists()
    done = json.loads(progress.read_text())["done"]
    assert 0 < done < 400, "the build was not killed midway"

    subprocess.run(cmd, cwd=tmp_path, env=ENV, check=True, capture_output=True)  # resumes
    resumed = (cache / "minilm.npy").read_bytes()
    for name in ("minilm.npy", "minilm.json"):
        (cache / name).unlink()
    subprocess.run(cmd, cwd=tmp_path, env=ENV, check=True, capture_output=True)  # from scratch
    assert (cache / "minilm.npy").read_bytes() == resumed


def _train(args: list[str], cwd: Path) -> dict:
    proc = subprocess.run([str(BIN / "recsys-train"), *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"recsys-train failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(Path(args[-1].split("=", 1)[1], "results.json").read_text())


@pytest.mark.slow
def test_training_killed_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path: Path):
    common = [f"paths.data_dir={tmp_path / 'data'}", *TINY]
    whole = _train([*common, f"hydra.run.dir={tmp_path / 'whole'}"], tmp_path)

    killed = tmp_path / "killed"
    last = killed / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen([str(BIN / "recsys-train"), *common, f"hydra.run.dir={killed}"], cwd=tmp_path,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = []  # into the second epoch: 0.5 s after epoch 0's checkpoint appeared
    _kill_when(proc, lambda: last.exists() and (started or started.append(time.monotonic()))
               and time.monotonic() - started[0] > 0.5)
    assert not (killed / "results.json").exists(), "the run finished before it could be killed"
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["epoch"] == 0  # killed during epoch 1 (0-based), after epoch 0's checkpoint

    resumed = _train([*common, f"ckpt_path={last}", f"hydra.run.dir={killed}"], tmp_path)
    assert resumed["efficiency"]["epochs"] < whole["efficiency"]["epochs"]  # really resumed
    assert resumed["metrics"]["val"] == whole["metrics"]["val"]
    assert resumed["metrics"]["test"] == whole["metrics"]["test"]


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
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"), pytest.raises(error) as raised:
        compose(config_name="train", overrides=[override])
    assert message in str(raised.value) + str(raised.value.__cause__)
