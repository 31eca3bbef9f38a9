"""End to end on tiny synthetic data with text, image, video and audio (real MiniLM and
EfficientNet-Lite0 weights, a random tiny AST): CROSSAN over 2-4 modalities, IISAN-type over
4, and IISAN-Versa with a tiny random Qwen2-architecture LLM whose cache keeps only the group
schedule; each through ``recsys.cli.train.train`` as recsys-train runs it."""

import json
from pathlib import Path

import pytest
from conftest import CPU_RUN, job_config

from recsys.cli.train import train

TINY = [  # the experiment's synthetic_av data, smaller
    "data.raw.n_users=50",
    "data.raw.n_items=24",
    "data.raw.n_clusters=3",
    "data.raw.max_length=10",
    "data.raw.video_frames=4",
    "data.raw.video_size=32",
    "data.raw.audio_seconds=0.5",
    "cache.progress_bar=false",
    "+trainer.limit_train_batches=2",
    *CPU_RUN,
]
TINY_AST = [  # 0.5 s clips: 50 fbank frames
    "encoder.audio.arch_overrides={num_hidden_layers:6,hidden_size:32,num_attention_heads:2,"
    "intermediate_size:64,max_length:50}",
    "encoder.audio.feature_extractor={max_length:50}",
    "encoder.audio.max_seconds=0.5",
    "encoder.video.num_frames=2",
]
TINY_QWEN = [  # added to the experiment's arch_overrides (vocab_size: the stand-in tokenizer's)
    f"+encoder.text.arch_overrides.{key}={value}"
    for key, value in {"num_hidden_layers": 12, "hidden_size": 64, "intermediate_size": 128,
                       "num_attention_heads": 4, "num_key_value_heads": 2}.items()
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")  # prepared and cached once, reused by every run


def _train(experiment: str, overrides: list[str], data_dir: Path, out: Path) -> dict:
    overrides = [f"experiment={experiment}", *TINY, *overrides, f"paths.data_dir={data_dir}"]
    cfg = job_config("train", overrides, out)
    results = train(cfg)
    assert results["status"] == "complete"
    assert 0 <= results["metrics"]["test"]["hr@10"] <= 1
    return results


@pytest.mark.slow
@pytest.mark.parametrize(
    ("adapter", "modalities"),
    [
        ("crossan", "[text,image]"),
        ("crossan", "[text,image,video,audio]"),
        ("iisan", "[text,image,video,audio]"),
    ],
)
def test_multimodal_towers_train_end_to_end(adapter, modalities, data_dir, tmp_path):
    overrides = [f"adapter={adapter}", f"adapter.modalities={modalities}", *TINY_AST]
    results = _train("crossan_synthetic", overrides, data_dir, tmp_path)
    used = modalities.strip("[]").split(",")
    assert results["method"] == f"{adapter}_{'+'.join(used)}"
    gates = {k: v for k, v in results["metrics"]["val"].items() if k.startswith("gate/")}
    if adapter == "crossan":  # MoMEF gate weights per modality reach results.json (and the logger)
        assert set(gates) == {f"gate/{m}" for m in used}
        assert sum(gates.values()) == pytest.approx(1.0, abs=1e-4)
    assert results["efficiency"]["cache_bytes"] > 0


@pytest.mark.slow
def test_versa_with_an_llm_caches_only_the_group_schedule(data_dir, tmp_path):
    results = _train("versa_synthetic", TINY_QWEN, data_dir, tmp_path)
    manifest = json.loads((data_dir / "cache" / "synthetic_av" / "qwen2_0_5b_random.json").read_text())
    assert manifest["encoder"]["layers"] == [0, 2, 4, 6, 8, 10, 12]  # 12 layers, 6 groups
    assert manifest["shape"][1:] == [7, 64]
    assert results["method"] == "iisan_versa_text+image"
