"""Runs carry their config: the W&B run's config holds the whole resolved config (the CSV
logger's hparams.yaml: tests/test_cli_e2e.py); the W&B run is named by the method label and
keeps its id when the run is resumed from its checkpoint, even in another directory. W&B
runs offline (no account, no network)."""

import json
from pathlib import Path

import pytest


def _logged_config(run_file: Path, key: str):
    """The value W&B logged for config ``key``, read from an offline run's ``.wandb`` records
    (protobuf ``ConfigItem``: field 1 the key, field 16 its JSON value)."""
    blob = run_file.read_bytes()
    start = blob.index(b"\n" + bytes([len(key)]) + key.encode() + b"\x82\x01") + len(key) + 4
    length = shift = 0
    while True:  # varint
        byte = blob[start]
        start += 1
        length |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return json.loads(blob[start : start + length])


@pytest.mark.slow
def test_wandb_receives_the_config_and_a_resumed_run_keeps_its_wandb_id(
    tmp_path: Path, run_cli, small_synthetic, id_only
):
    common = [*small_synthetic, *id_only, "data.raw.n_users=80", "trainer.accelerator=cpu",
              f"paths.data_dir={tmp_path / 'data'}", "adapter=id", "label=id_sasrec"]
    wandb = ["logger=wandb"]
    offline = {"WANDB_MODE": "offline"}
    run_a = tmp_path / "a"
    run_cli("recsys-train", [*common, *wandb, "trainer.max_epochs=1", f"hydra.run.dir={run_a}"], tmp_path,
            env=offline)
    config_a = json.loads((run_a / "results.json").read_text())["config"]
    run_id = config_a["logger"]["wandb"]["id"]
    assert config_a["logger"]["wandb"]["name"] == "id_sasrec-synthetic-s42"  # the label, not "id"
    [offline_run] = (run_a / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    for key in ("adapter", "eval", "optimizer", "data", "label", "seed"):
        assert _logged_config(offline_run, key) == config_a[key], key

    # Resumed from run a's checkpoint in another directory: the same W&B run id.
    run_b = tmp_path / "b"
    resume = [f"ckpt_path={run_a / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={run_b}"]
    run_cli("recsys-train", [*common, *wandb, "trainer.max_epochs=2", *resume], tmp_path, env=offline)
    assert json.loads((run_b / "results.json").read_text())["config"]["logger"]["wandb"]["id"] == run_id
    assert list((run_b / "wandb").glob(f"offline-run-*-{run_id}"))
