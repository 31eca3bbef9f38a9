"""Faults: a training run killed mid-epoch and resumed from last.ckpt ends exactly where the
uninterrupted run ends; checkpoints are loaded without unpickling arbitrary objects."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

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
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # into the second epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
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
