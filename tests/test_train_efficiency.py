"""EfficiencyCallback and results.json: figures are measured, validation time is excluded
from epoch time, writes are atomic."""

import json
import time

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from recsys.atomic_io import write_json_atomic
from recsys.train.efficiency import EfficiencyCallback, _peak_memory_bytes, _reset_peak
from recsys.train.results import format_summary

SLEEP_TRAIN, SLEEP_VAL = 0.05, 0.2


class _Sleepy(pl.LightningModule):
    """Known costs: each train batch sleeps SLEEP_TRAIN, each val pass SLEEP_VAL."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)
        self.frozen = torch.nn.Linear(4, 4).requires_grad_(False)

    def training_step(self, batch, batch_idx):
        time.sleep(SLEEP_TRAIN)
        return self.lin(batch["items"].float()).mean()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_start(self):
        time.sleep(SLEEP_VAL)

    def configure_optimizers(self):
        return torch.optim.SGD(self.lin.parameters(), lr=0.1)


def _loader(n):
    return DataLoader([{"items": torch.ones(4), "target": torch.tensor(1)} for _ in range(n)], batch_size=2)


def test_callback_measures_params_time_throughput_memory():
    cb = EfficiencyCallback()
    trainer = pl.Trainer(
        max_epochs=3,
        callbacks=[cb],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(_Sleepy(), train_dataloaders=_loader(8), val_dataloaders=_loader(2))
    s = cb.summary()
    assert s["trainable_params"] == 5 and s["total_params"] == 5 + 20
    assert s["epochs"] == 3 and len(s["epoch_seconds"]) == 3
    # 4 batches x 50 ms per epoch; the 200 ms validation pass must not be counted.
    assert 4 * SLEEP_TRAIN <= s["s_per_epoch"] < 4 * SLEEP_TRAIN + SLEEP_VAL * 0.75
    assert s["val_eval_s"] >= SLEEP_VAL
    # the module's eval-start work (embedding the catalogue) happens before the first batch
    assert s["item_tower_s"] >= SLEEP_VAL and s["user_batch_latency_ms"] > 0
    assert s["eval_batch_size"] == 2
    assert s["sequences_per_s"] == pytest.approx(8 / s["s_per_epoch"], rel=0.05)
    assert s["steps_per_epoch"] == 4 and s["s_per_step"] == pytest.approx(s["s_per_epoch"] / 4)
    assert s["memory_kind"] == "cpu_peak_rss" and s["peak_train_memory_bytes"] > 10 * 2**20


def test_cpu_peak_memory_is_reset_per_phase():
    cpu = torch.device("cpu")
    big = torch.ones(400 * 2**20, dtype=torch.uint8)
    big += 1
    high = _peak_memory_bytes(cpu)
    del big
    _reset_peak(cpu)  # a later phase must not inherit the earlier peak
    assert _peak_memory_bytes(cpu) < high - 200 * 2**20


def test_results_written_atomically_and_summarised(tmp_path):
    path = tmp_path / "run" / "results.json"
    results = {
        "status": "complete",
        "method": "iisan",
        "dataset": "movielens",
        "seed": 0,
        "metrics": {"val": {"hr@10": 0.2}, "test": {"hr@10": 0.1234, "ndcg@10": 0.05, "mrr@10": 0.03}},
        "baselines": {"popularity": {"test": {"hr@10": 0.05, "ndcg@10": 0.02, "mrr@10": 0.01}}},
        "efficiency": {
            "trainable_params": 4113877,
            "s_per_epoch": 1.5,
            "epochs": 3,
            "peak_train_memory_bytes": 2**30,
            "memory_kind": "cpu_peak_rss",
            "cache_build_s": 12.0,
        },
    }
    write_json_atomic(path, results)
    assert json.loads(path.read_text()) == results
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temp file left
    table = format_summary(results)
    assert "0.1234" in table and "4,113,877" in table and "peak RSS (MiB)" in table
    assert "popularity" in table and "1024" in table
    # written before the counted costs existed: their lines say "-"
    for label in ("counted train mem (MiB)", "train GFLOPs / sequence", "query MFLOPs / user",
                  "query b1 p50/p99 (ms)", "query b256 p50/p99 (ms)"):
        assert f"{label:<24}-" in table.splitlines()

    counted = {
        "train_flops_per_sequence": 2.5e9, "item_flops_per_item": 1.5e6, "query_flops": 3e6,
        "model_state_bytes": 3 * 2**20, "peak_activation_bytes": 2**19, "feature_bytes": 2**19,
        "train_memory_bytes": 4 * 2**20, "query_p50_ms_b1": 0.25, "query_p99_ms_b1": 0.5,
        "query_p50_ms_b256": 2.0, "query_p99_ms_b256": 3.125,
    }
    lines = format_summary(results | {"efficiency": results["efficiency"] | counted}).splitlines()
    for label, value in (("counted train mem (MiB)", "4.0 = state 3.0 + activations 0.5 + features 0.5"),
                         ("train GFLOPs / sequence", "2.5"), ("item MFLOPs / item", "1.5"),
                         ("query MFLOPs / user", "3"), ("query b1 p50/p99 (ms)", "0.25 / 0.50"),
                         ("query b256 p50/p99 (ms)", "2.00 / 3.12")):
        assert f"{label:<24}{value}" in lines

    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == results  # the old file survives a failed write
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]
