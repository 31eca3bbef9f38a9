"""One tiny training run per baseline method through ``recsys.cli.train.train`` (real MiniLM
text encoder in the loop, or its cache for ``frozen``), on a small synthetic dataset."""

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
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")  # shared: the dataset is prepared once


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_method_trains_and_evaluates_end_to_end(method, data_dir, tmp_path):
    overrides = [
        f"adapter={method}",
        f"label={method}",
        *TINY,
        *METHODS[method],
        f"paths.data_dir={data_dir}",
    ]
    results = train(job_config("train", overrides, tmp_path / "run"))
    assert results["status"] == "complete" and results["method"] == method
    assert 0 <= results["metrics"]["test"]["hr@10"] <= 1
    eff = results["efficiency"]
    encoder_in_model = method != "frozen"  # frozen reads the cache: no encoder in the model
    assert (eff["total_params"] > 22_000_000) == encoder_in_model
    assert 0 < eff["trainable_params"] <= eff["total_params"]
    assert (eff["trainable_params"] > 22_000_000) == (method == "fft")
    assert (eff["cache_build_s"] is None) == encoder_in_model  # no cache for in-loop encoders
