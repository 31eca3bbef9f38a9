"""experiments/peer_recbole.py without RecBole (it installs into its own venv, not in CI): the
export RecBole reads gives this project's order and split, and the three protocols rank as
their definitions say."""

import sys
from pathlib import Path

import polars as pl
import torch
from conftest import ID_ONLY, SMALL_SYNTHETIC, job_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import peer_recbole  # noqa: E402

from data_prep.prep import run as prep  # noqa: E402
from recsys.data.processed import ProcessedDataset  # noqa: E402
from recsys.train.builders import build_datamodule  # noqa: E402


def test_export_keeps_every_interaction_in_order_and_the_split_is_this_projects(tmp_path):
    overrides = [f"paths.data_dir={tmp_path / 'data'}", *SMALL_SYNTHETIC]
    processed = prep(job_config("prep", overrides))
    dataset = ProcessedDataset.load(processed)
    peer_recbole.export_interactions(dataset, tmp_path / "rb", "synthetic")
    lines = (tmp_path / "rb" / "synthetic" / "synthetic.inter").read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\ttimestamp:float"
    rows = [tuple(map(int, line.split("\t"))) for line in lines[1:]]
    assert rows == list(dataset.interactions.select("user_id", "item_id", "position").iter_rows())

    config = peer_recbole.recbole_config(tmp_path / "rb", "synthetic", 10, 0, tmp_path)
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"} and config["eval_args"]["order"] == "TO"
    assert config["MAX_ITEM_LIST_LENGTH"] == 10 and config["train_neg_sample_args"] is None

    split = peer_recbole.test_split(build_datamodule(job_config("train", [*overrides, *ID_ONLY])))
    per_user = (dataset.interactions.group_by("user_id")
                .agg(pl.col("item_id").last(), pl.len()).sort("user_id"))
    assert split["target"].tolist() == per_user["item_id"].to_list()  # leave-one-out: each user's last item
    assert (split["history"] > 0).sum(1).tolist() == [n - 1 for n in per_user["len"]]


def test_protocols_mask_what_they_say():
    """Item 1 scores highest and was seen; the target (item 2) repeats a seen item for user 0."""
    item_emb = torch.tensor([[0.0], [3.0], [2.0], [1.0]] + [[-1.0]] * 9)  # items 1..12; 4..12 last
    states = torch.ones(2, 1)
    targets = torch.tensor([2, 3])
    history = torch.tensor([[1, 2], [1, 0]])
    got = peer_recbole.rank_metrics(states, item_emb, targets, history)
    # unmasked: ranks 2 and 3; kept: user 0 rank 1 (item 1 masked), user 1 rank 2; official:
    # user 0's target is in its history (masked, rank N+1 = 13: no hit), user 1 rank 2.
    assert got["unmasked"]["mrr@10"] == (1 / 2 + 1 / 3) / 2
    assert got["kept"]["mrr@10"] == (1 + 1 / 2) / 2
    assert got["official"]["mrr@10"] == (0 + 1 / 2) / 2 and got["official"]["hr@10"] == 0.5
