"""SequenceDataModule: batch shapes and contents; every user exactly once in val/test."""

import numpy as np
import pytest
import torch

from data_prep.prep import prepare
from recsys.data.datamodule import SequenceDataModule


@pytest.fixture(scope="module")
def scientific_dir(shared_data, tmp_path_factory):
    root = shared_data / "amazon-iisan" / "Scientific"
    data = {
        "name": "scientific", "reader": "amazon_iisan", "on_error": "raise",
        "raw": {"users_file": str(root / "am_Industrial_and_Scientific_users.tsv"),
                "items_file": str(root / "Industrial_and_Scientific_items.tsv")},
        "protocol": {"min_interactions": 5, "keep_last": 13, "window": 10},
        "processed_dir": str(tmp_path_factory.mktemp("data") / "scientific"),
    }
    return prepare(data)


@pytest.fixture(scope="module")
def datamodule(scientific_dir):
    module = SequenceDataModule(scientific_dir, window=10, batch_size=64, eval_batch_size=1000)
    module.setup("fit")
    return module


def test_exposes_dataset_properties(datamodule):
    assert (datamodule.num_users, datamodule.num_items) == (12_076, 20_314)
    popularity = datamodule.train_popularity
    assert popularity.dtype == torch.float32 and popularity.shape == (20_315,)
    assert popularity[0] == 0 and popularity.sum() == 81_711 - 2 * 12_076
    assert datamodule.items.height == 20_314
    assert len(datamodule.fingerprint) == 64


def test_train_batches_are_the_windows_shuffled(datamodule):
    loader = datamodule.train_dataloader()
    batches = list(loader)
    assert all(b["items"].dtype == torch.long for b in batches)
    assert batches[0]["items"].shape == (64, 11)
    windows = torch.cat([b["items"] for b in batches])
    assert windows.shape == (12_076, 11)  # keep_last 13 -> exactly one window per user
    sequences = datamodule.sequences
    expected = [
        [0] * (13 - n) + sequences.sequence(u)[:-2].tolist()
        for u, n in enumerate(sequences.lengths.tolist())
    ]
    assert sorted(windows.tolist()) == sorted(expected)
    assert windows.tolist() != expected  # shuffled, not in user order
    again = torch.cat([b["items"] for b in datamodule.train_dataloader()])
    assert torch.equal(again, windows)  # same seed -> same order
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(1)  # Lightning does this every epoch, also after a resume
    epoch1 = torch.cat([b["items"] for b in loader])
    assert not torch.equal(epoch1, windows) and sorted(epoch1.tolist()) == sorted(windows.tolist())


@pytest.mark.parametrize("stage, holdout", [("val", 2), ("test", 1)])
def test_eval_batches_cover_every_user_once(datamodule, stage, holdout):
    loader = getattr(datamodule, f"{stage}_dataloader")()
    batches = list(loader)
    users = torch.cat([b["user"] for b in batches])
    assert torch.equal(users, torch.arange(12_076))
    sequences = datamodule.sequences
    for batch in batches[:2]:
        size = len(batch["user"])
        assert batch["inputs"].shape == (size, 10) and batch["target"].shape == (size,)
        assert batch["history"].dim() == 2 and batch["history"].shape[0] == size
        for row, user in enumerate(batch["user"].tolist()):
            s = sequences.sequence(user).tolist()
            cut = len(s) - holdout
            inputs = s[max(0, cut - 10):cut]
            assert batch["inputs"][row].tolist() == [0] * (10 - len(inputs)) + inputs
            assert batch["target"][row] == s[cut]
            history = batch["history"][row]
            assert sorted(history[history > 0].tolist()) == sorted(s[:cut])  # a repeated target too


def test_worker_processes(scientific_dir):
    module = SequenceDataModule(scientific_dir, eval_batch_size=4096, num_workers=1)
    users = torch.cat([b["user"] for b in module.test_dataloader()])
    assert np.array_equal(users.numpy(), np.arange(12_076))
