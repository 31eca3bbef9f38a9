"""A method from outside the framework: a temporary package holding one tower module and its
adapter yaml, announced by entry points (``recsys.adapters`` for the code, ``recsys.configs``
for the yaml), trains end to end through ``recsys-train`` and joins the method sweep, without
any file of recsys being touched."""

import json
from pathlib import Path

import pytest

TOWER = '''"""The last cached layer of each modality through one Linear, scaled (a plugin's tower)."""

from pydantic import PositiveFloat
from torch import nn

from recsys.adapters import ItemTower, register_adapter, trainable


@register_adapter("last_layer_probe")
class LastLayerProbe(ItemTower):
    reads = "cache"

    def __init__(self, source, scale: PositiveFloat = 1.0, d_model: int = 64) -> None:
        super().__init__()
        self.store, self.scale, self.d_model = source, scale, d_model
        self.heads = nn.ModuleDict({m: nn.Linear(source.widths[m][-1], d_model)
                                    for m in source.modalities})

    @property
    def num_items(self) -> int:
        return self.store.num_items

    def forward(self, item_ids):
        parts = [head(self.scale * self.store.gather(m, item_ids)[..., -1, : head.in_features].float())
                 for m, head in self.heads.items()]
        return sum(parts)

    def param_groups(self):
        return {"adapter": [], "text_head": [], "head": trainable(self.parameters())}
'''
CONFIG = """name: last_layer_probe
modalities: [text]
layer_groups: ${layer_schedule.groups}
layers: null
scale: 0.5
"""


def _plugin(root: Path) -> Path:
    """``root/my_methods`` (module + conf/adapter/last_layer_probe.yaml) and its dist-info."""
    package = root / "my_methods"
    (package / "conf" / "adapter").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "probe.py").write_text(TOWER)
    (package / "conf" / "__init__.py").write_text("")
    (package / "conf" / "adapter" / "last_layer_probe.yaml").write_text(CONFIG)
    info = root / "my_methods-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-methods\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[recsys.adapters]\nlast_layer_probe = my_methods.probe\n\n"
        "[recsys.configs]\nmy_methods = my_methods.conf\n"
    )
    return root


@pytest.mark.slow
def test_a_tower_from_another_package_trains_through_recsys_train(tmp_path, run_cli, small_synthetic,
                                                                 cpu_run):
    env = {"PYTHONPATH": str(_plugin(tmp_path / "site"))}
    run_dir = tmp_path / "run"
    args = [*small_synthetic, *cpu_run, "encoder/image=none", "adapter=last_layer_probe",
            f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={run_dir}"]
    run_cli("recsys-train", args, tmp_path, env=env)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "complete" and results["method"] == "last_layer_probe"
    assert results["adapter"] == "last_layer_probe" and results["config"]["adapter"]["scale"] == 0.5
    assert results["efficiency"]["trainable_params"] == (384 * 64 + 64) + 100_224  # its Linear + SASRec
    assert results["metrics"]["test"]["hr@10"] > 0

    # Its options are checked like a built-in tower's, before any work ...
    bad = run_cli("recsys-train", [*args, "adapter.scale=-1"], tmp_path, expect=2, env=env)
    assert "adapter.scale: -1: Input should be greater than 0" in bad.stderr
    # ... and the method sweep (every adapter option) includes it.
    out = run_cli("recsys-train", ["experiment=compare_methods", "--cfg", "hydra", "--resolve", "-p",
                                   "hydra.sweeper.params"],
                  tmp_path, env=env)
    assert "last_layer_probe" in out.stdout and "iisan_versa" in out.stdout
