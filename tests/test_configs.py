"""Hydra compose tests: every option of every config group composes and resolves."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import recsys.cli  # noqa: F401  (registers the resolvers the configs use, as every entry point does)

CONF = Path(__file__).resolve().parents[1] / "conf"
ROOTS = ("train", "eval", "cache", "prep", "export")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(config_name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def _resolved(cfg) -> dict:
    """Resolve every interpolation (the hydra node itself excluded)."""
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def _group_overrides() -> list[tuple[str, str]]:
    cases = []
    for group in (
        "data",
        "adapter",
        "model",
        "trainer",
        "logger",
        "callbacks",
        "cache",
        "encoder/text",
        "encoder/image",
        "encoder/video",
        "encoder/audio",
        "hparams_search",
        "hydra/launcher",
        "experiment",
    ):
        cases += [(group, option) for option in _options(group)]
    return cases


def test_every_root_config_composes():
    for root in ROOTS:
        overrides = ["run_dir=/tmp/run"] if root in ("eval", "export") else []
        out = _resolved(_compose(root, overrides))
        assert out["paths"]["data_dir"].endswith("data")


@pytest.mark.parametrize(("group", "option"), _group_overrides())
def test_every_group_option_composes_into_train(group, option):
    cfg = _compose("train", [f"{group}={option}"])
    out = _resolved(cfg)
    assert out["adapter"]["name"]
    assert out["data"]["processed_dir"]
    if group == "adapter":
        assert out["adapter"]["name"] in option or option.startswith(out["adapter"]["name"])


def test_experiment_configs_exist_for_reference_rows():
    assert {"demo", "iisan_scientific", "iisan_instrument", "iisan_scientific_text"} <= set(
        _options("experiment")
    )


def test_faithful_experiment_matches_reference_settings():
    out = _resolved(_compose("train", ["experiment=iisan_scientific"]))
    assert out["data"]["protocol"] == {"min_interactions": 5, "keep_last": 13, "window": 10}
    assert out["data"]["batch_size"] == 64
    assert out["adapter"]["streams"] == "intra_inter" and out["adapter"]["fusion"] == "gated"
    assert out["adapter"]["layer_groups"] == 6 and out["adapter"]["bottleneck"] == 64
    assert out["optimizer"]["lr"] == {"adapter": 1e-4, "text_head": 5e-5, "other": 2e-4}
    assert out["callbacks"]["early_stopping"]["patience"] == 11
    assert out["trainer"]["max_epochs"] == 100
    assert out["encoder"]["text"]["pooling"] == "cls"
    assert out["encoder"]["text"]["max_length"] == 30


def test_adapter_reads_the_modalities_that_have_an_encoder():
    from recsys.train.builders import active_encoders, adapter_encoders

    cfg = _compose("train", ["experiment=iisan_scientific_text"])
    assert list(adapter_encoders(cfg)) == ["text"]
    assert list(adapter_encoders(_compose("train", ["experiment=demo"]))) == ["text", "image"]
    assert active_encoders(_compose("train", ["experiment=iisan_scientific_text", "adapter=id"])) == {}
    assert active_encoders(_compose("train", ["adapter=fft"])) == {}  # encoders run in the step
    with pytest.raises(ValueError, match="no encoder is selected"):
        adapter_encoders(_compose("train", ["encoder/text=none", "encoder/image=none"]))
