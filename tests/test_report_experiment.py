"""conf/experiment/compare_methods.yaml: a multirun over the adapter configs x 3 seeds."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_compare_methods_sweeps_every_adapter_on_the_demo_setup():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=compare_methods"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    swept = set(params.adapter.split(","))
    # Every method (adapter config) is swept.
    assert swept == {p.stem for p in (CONF / "adapter").glob("*.yaml")}
    assert params.seed == "0,1,2"
    assert cfg.task_name == "compare_methods" and list(cfg.logger) == ["csv"]
    assert cfg.data.name == "movielens" and cfg.trainer.max_epochs == 20  # the demo setup
    assert cfg._get_node("label")._value() == "${hydra:runtime.choices.adapter}"  # conf/train.yaml
    GlobalHydra.instance().clear()
