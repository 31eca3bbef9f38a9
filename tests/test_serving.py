"""Serving from an export alone: the answer equals the trained model's own full ranking."""

import json
import subprocess
import sys

import polars as pl
import pytest
import torch

from recsys.models.sasrec import SASRec
from recsys.serving.export import write_export
from recsys.serving.topk import ExportedRecommender

N, D, WINDOW = 30, 16, 5


#: The user encoder of the hand-made exports, as export.json names it.
ENCODER = {"name": "sasrec", "options": {"d_model": D, "num_blocks": 1, "num_heads": 2, "ffn_dim": 32,
                                         "max_len": WINDOW}}


def make_export(out_dir, table, encoder, **layout):
    """An export of ``table`` [N+1, D] and ``encoder`` with items k1..kN, written by the real
    writer; ``layout``: ``embeddings``, ``index``, ``candidates``."""
    catalogue = pl.DataFrame({"item_id": list(range(1, N + 1)), "key": [f"k{i}" for i in range(1, N + 1)],
                              "title": ["t"] * N})
    return write_export(out_dir, table, encoder, catalogue, {"window": WINDOW, "user_encoder": ENCODER},
                        **layout)


@pytest.fixture
def export_dir(tmp_path):
    torch.manual_seed(0)
    table = torch.randn(N + 1, D)
    table[0] = 0
    encoder = SASRec(**ENCODER["options"]).eval()
    return make_export(tmp_path / "export", table, encoder), table, encoder


def test_recommend_matches_brute_force_ranking(export_dir):
    path, table, encoder = export_dir
    rec = ExportedRecommender.load(path)
    history = [3, 7, 7, 1, 12, 5, 9]  # longer than the window: the last 5 are used
    answer = rec.recommend([f"k{i}" for i in history] + ["unknown"], k=4)
    assert answer.unknown == ["unknown"]
    inputs = torch.tensor([history[-WINDOW:]])
    with torch.no_grad():
        scores = (encoder(table[inputs], inputs != 0)[:, -1] @ table.T)[0]
    ranked = [i for i in scores.argsort(descending=True).tolist() if i != 0 and i not in history]
    assert answer.items == [f"k{i}" for i in ranked[:4]]
    torch.testing.assert_close(torch.tensor(answer.scores), scores[ranked[:4]])


def test_short_history_is_left_padded_and_history_can_be_kept(export_dir):
    path, table, encoder = export_dir
    answer = ExportedRecommender.load(path).recommend(["k2"], k=N, exclude_history=False)
    assert len(answer.items) == N and "k2" in answer.items


def test_bad_exports_and_histories_raise_clearly(export_dir):
    path, *_ = export_dir
    with pytest.raises(ValueError, match="none of the history items"):
        ExportedRecommender.load(path).recommend(["x", "y"])
    meta = json.loads((path / "export.json").read_text())
    meta["user_encoder"]["name"] = "os.system"
    (path / "export.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="is not one of"):
        ExportedRecommender.load(path)
    with pytest.raises(FileNotFoundError, match="recsys-export"):
        ExportedRecommender.load(path / "missing")


def test_serving_imports_nothing_of_lightning_or_hydra(export_dir):
    """A server needs torch, polars and safetensors: loading and answering from an export pulls
    in no training stack (checked in a fresh interpreter)."""
    path, *_ = export_dir
    code = (
        "import sys\n"
        "from recsys.serving.topk import ExportedRecommender\n"
        f"ExportedRecommender.load({str(path)!r}).recommend(['k1', 'k2'], k=3)\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'pytorch_lightning', 'lightning', 'lightning_fabric', 'hydra', 'omegaconf', 'wandb'})\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
