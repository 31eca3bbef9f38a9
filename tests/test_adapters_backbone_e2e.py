"""One tiny training run per baseline method through ``recsys.cli.train.train`` (real MiniLM
text encoder in the loop, or its cache for ``frozen`` and ``iisan``), on a small synthetic
dataset; their counted costs (recsys.train.cost) ordered as the methods' work is."""

import pytest
from conftest import CPU_RUN, SMALL_SYNTHETIC, job_config

from recsys.cli.train import train

TINY = [
    *SMALL_SYNTHETIC,
    "data.raw.n_users=60",
    "data.raw.n_items=40",
    "data.raw.n_clusters=4",
    "data.raw.max_length=12",
    "encoder/image=none",
    "adapter.modalities=[text]",
    *CPU_RUN,
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
]
METHODS = {
    "iisan_uncached": ["adapter.streams=intra"],
    "fft": [],
    "houlsby": [],
    "lora": [],
    "bitfit": [],
    "frozen": [],
    "iisan": ["adapter.streams=intra"],  # the cached side adapter
    "id": ["adapter.modalities=[]"],  # no encoder at all
}
COUNTED = ("train_flops_per_step", "train_flops_per_sequence", "query_flops", "model_state_bytes",
           "peak_activation_bytes", "train_memory_bytes", "query_p50_ms_b1", "query_p99_ms_b1",
           "query_p50_ms_b256", "query_p99_ms_b256")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """method -> its results.json record, each method trained once (the dataset prepared once)."""
    data_dir, runs = tmp_path_factory.mktemp("data"), {}

    def results(method: str) -> dict:
        if method not in runs:
            overrides = [f"adapter={method}", f"label={method}", *TINY, *METHODS[method],
                         f"paths.data_dir={data_dir}"]
            runs[method] = train(job_config("train", overrides, tmp_path_factory.mktemp(method)))
        return runs[method]

    return results


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_method_trains_and_evaluates_end_to_end(method, trained):
    results = trained(method)
    assert results["status"] == "complete" and results["method"] == method
    assert 0 <= results["metrics"]["test"]["hr@10"] <= 1
    eff = results["efficiency"]
    encoder_in_model = method not in ("frozen", "iisan", "id")  # the others read a cache or nothing
    assert (eff["total_params"] > 22_000_000) == encoder_in_model
    assert 0 < eff["trainable_params"] <= eff["total_params"]
    assert (eff["trainable_params"] > 22_000_000) == (method == "fft")
    assert (eff["cache_build_s"] is None) == (method != "frozen" and method != "iisan")
    assert all(eff[key] > 0 for key in COUNTED), {key: eff[key] for key in COUNTED}
    assert (eff["item_flops_per_item"] > 0) == (method != "id")  # an ID lookup multiplies nothing
    assert (eff["feature_bytes"] > 0) == (method != "id")  # a cache, or the encoder's inputs
    assert eff["train_memory_bytes"] == (
        eff["model_state_bytes"] + eff["peak_activation_bytes"] + eff["feature_bytes"]
    )


@pytest.mark.slow
def test_counted_costs_order_the_methods_by_their_work(trained):
    fft, iisan, ident = (trained(m)["efficiency"] for m in ("fft", "iisan", "id"))
    # a side adapter over cached states does more work per sequence than an ID lookup ...
    assert iisan["train_flops_per_sequence"] > ident["train_flops_per_sequence"]
    # ... and far less than fine-tuning the encoder, which also holds its weights, gradients
    # and Adam moments and the encoder's activations
    assert fft["train_flops_per_sequence"] > 10 * iisan["train_flops_per_sequence"]
    assert fft["train_memory_bytes"] > iisan["train_memory_bytes"]
    assert fft["model_state_bytes"] > 4 * 4 * 22_000_000
