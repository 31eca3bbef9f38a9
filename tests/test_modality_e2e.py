"""End to end: recsys-train with modality dropout, per-subset tests and gate pruning on tiny
synthetic data (real MiniLM and EfficientNet-Lite0), then recsys-eval on a subset; and the
modality_robustness sweep composes to the runs its report needs."""

import math

import polars as pl
import pytest
from conftest import CPU_RUN, SMALL_SYNTHETIC, job_config

from recsys.cli import compose
from recsys.cli.evaluate import evaluate
from recsys.cli.train import train
from recsys.config.schema import check_config

TINY = [*SMALL_SYNTHETIC, "data.raw.n_users=80", "data.raw.n_items=30", "data.raw.n_clusters=3",
        "data.raw.max_length=8", "+trainer.limit_train_batches=2", "encoder.text.batch_size=32",
        "encoder.image.batch_size=32", *CPU_RUN]
SUBSETS = "eval.modality_subsets=[[text,image],[text],[image]]"


@pytest.mark.slow
def test_crossan_with_dropout_subsets_and_pruning(tmp_path):
    out = tmp_path / "run"
    overrides = [*TINY, f"paths.data_dir={tmp_path / 'data'}", "adapter=crossan",
                 "adapter.modality_dropout=0.3", SUBSETS, "prune.gate_threshold=0.9", "logger=csv"]
    results = train(job_config("train", overrides, out))
    assert results["status"] == "complete" and results["config"]["adapter"]["modality_dropout"] == 0.3
    by_subset = results["metrics"]["test_by_modalities"]
    assert list(by_subset) == ["image+text", "text", "image"]
    for metrics in by_subset.values():
        assert all(math.isfinite(v) for v in metrics.values()) and 0 <= metrics["ndcg@10"] <= 1
    assert by_subset["image+text"] == pytest.approx(results["metrics"]["test"])  # every modality
    pruning = results["pruning"]
    weights = pruning["gate_weights"]
    assert set(weights) == {"text", "image"} and sum(weights.values()) == pytest.approx(1, abs=1e-4)
    assert len(pruning["pruned"]) == 1 and pruning["kept"] == [max(weights, key=weights.get)]  # 0.9: one goes
    assert pruning["test"] == pytest.approx(by_subset[pruning["kept"][0]])
    saved = pruning["cost_saved"]
    assert 0 < saved["item_flops_per_item"]["saved"] < saved["item_flops_per_item"]["all"]
    assert saved["item_flops_per_item"]["all"] == results["efficiency"]["item_flops_per_item"]
    assert saved["feature_bytes"]["all"] == results["efficiency"]["feature_bytes"]
    assert 0 < saved["feature_bytes"]["saved"] < saved["feature_bytes"]["all"]

    logged = pl.read_csv(next(out.glob("csv/version_*/metrics.csv")))
    assert logged["test/ndcg@10"].drop_nulls().to_list() == [  # the subsets' test passes: not as test/*
        pytest.approx(results["metrics"]["test"]["ndcg@10"])]
    for subset, metrics in by_subset.items():  # but under their own names, once the run is complete
        assert logged[f"test_by_modalities/{subset}/ndcg@10"].drop_nulls().to_list() == [
            pytest.approx(metrics["ndcg@10"])]
    assert logged["pruned/test/hr@10"].drop_nulls().to_list() == [pytest.approx(pruning["test"]["hr@10"])]
    assert logged["summary/trainable_params"].drop_nulls().to_list() == [
        results["efficiency"]["trainable_params"]]

    evaluated = evaluate(out, "best", ["test"], compose("eval", [f"run_dir={out}", "eval.modalities=[text]"]))
    assert evaluated["eval"]["modalities"] == ["text"]
    assert evaluated["test"]["ndcg@10"] == pytest.approx(by_subset["text"]["ndcg@10"])


def test_modality_robustness_sweeps_dropout_and_tests_each_subset(tmp_path):
    cfg = compose("train", ["experiment=modality_robustness"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params["adapter"] == "iisan,crossan" and params["adapter.modality_dropout"] == "0.0,0.3"
    assert params.seed == "0,1,2" and cfg.data.name == "movielens"
    assert [list(s) for s in cfg.eval.modality_subsets] == [["text", "image"], ["text"], ["image"]]
    for adapter in params["adapter"].split(","):
        check_config(job_config("train", ["experiment=modality_robustness", f"adapter={adapter}",
                                          "adapter.modality_dropout=0.3", "prune.gate_threshold=0.2"],
                                tmp_path), "train")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["adapter.modality_dropout=1.0"], "adapter.modality_dropout: 1.0: Input should be less than 1"),
        (["adapter=iisan_intra", "encoder/image=none", "adapter.modality_dropout=0.2"],
         "adapter.modality_dropout: 0.2: drops modalities of cached features, so it needs a tower"),
        (["adapter=id", "encoder/text=none", "encoder/image=none", "adapter.modality_dropout=0.2"],
         "adapter 'id' reads no cache"),
        (["eval.modalities=[audio]"], "eval.modalities: ['audio']: must be a non-empty subset"),
        (["eval.modalities=[]"], "eval.modalities: []: List should have at least 1 item"),
        (["eval.modality_subsets=[[text],[video]]"], "eval.modality_subsets: ['video']: must be"),
        (["prune.gate_threshold=0"], "prune.gate_threshold: 0: Input should be greater than 0"),
        (["prune.gate_threshold=0.2", "eval.modalities=[text]"], "leave eval.modalities null"),
    ],
)
def test_modality_knobs_are_checked_at_compose(overrides, message, tmp_path):
    with pytest.raises(ValueError, match="invalid train config") as raised:
        check_config(job_config("train", overrides, tmp_path), "train")
    assert message in str(raised.value), str(raised.value)
