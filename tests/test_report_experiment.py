"""conf/experiment/compare_methods.yaml: a multirun over the adapter configs x 3 seeds."""

from pathlib import Path

from recsys.cli import compose

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_compare_methods_sweeps_every_adapter_on_the_demo_setup():
    cfg = compose("train", ["experiment=compare_methods"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    # Every method: the options of the adapter group, derived from what is on the search path
    # (a plugin's configs join it: tests/test_plugins.py).
    assert set(params.adapter.split(",")) == {p.stem for p in (CONF / "adapter").glob("*.yaml")}
    assert params.seed == "0,1,2"
    assert cfg.task_name == "compare_methods" and list(cfg.logger) == ["csv"]
    assert cfg.data.name == "movielens" and cfg.trainer.max_epochs == 20  # the demo setup
    assert cfg._get_node("label")._value() == "${hydra:runtime.choices.adapter}"  # conf/train.yaml
