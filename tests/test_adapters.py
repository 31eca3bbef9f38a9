"""Item towers: side block / gate init, stream recurrences vs a loop reference, variants,
widths and alignment, parameter count of the faithful config, unique-ids trick, groups."""

import math

import pytest
import torch
from torch.nn import functional as F

from recsys.adapters import build_item_tower, list_adapters
from recsys.adapters.iisan import IISANTower
from recsys.adapters.side_block import LayerAlign, Mix, SideBlock
from recsys.cache.features import FeatureStore
from recsys.models.sasrec import SASRec

EFFNET_WIDTHS = [32, 16, 24, 40, 80, 112, 320]  # EfficientNet-like stage widths


def make_store(widths: dict[str, list[int]], n_items: int = 12, seed: int = 0) -> FeatureStore:
    """Random fp16 features [N+1, L, D_max], zero past each layer's width, row 0 = zeros."""
    g = torch.Generator().manual_seed(seed)
    feats = {}
    for m, ws in widths.items():
        f = torch.zeros(n_items + 1, len(ws), max(ws))
        for layer, w in enumerate(ws):
            f[1:, layer, :w] = torch.randn(n_items, w, generator=g)
        feats[m] = f.half()
    return FeatureStore(feats, widths)


def randomise_gates(tower: torch.nn.Module) -> None:
    """Move gates off 0.5 so a swapped g / (1-g) would be caught."""
    for mod in tower.modules():
        if isinstance(mod, Mix) and mod.weight is not None:
            mod.weight.data.uniform_(-0.3, 0.3)


def reference_embedding(tower: IISANTower, item: int) -> torch.Tensor:
    """Hand-written IISAN forward of ONE item, straight from the spec, -> [d_model]."""

    def block(b, x):
        return x + F.linear(F.relu(F.linear(x, b.down.weight, b.down.bias)), b.up.weight, b.up.bias)

    def mix(m, a, c):
        if m.weight is None:
            return a + c
        g = torch.sigmoid(m.weight / 0.1)
        return g * a + (1 - g) * c

    def layer(m, align, k):
        h = tower.store.gather(m, torch.tensor([item]))[0, k, : align.widths[k]].float()
        lin = align.maps[k]
        return h if isinstance(lin, torch.nn.Identity) else F.linear(h, lin.weight, lin.bias)

    outs = {}
    for m, s in tower.intra.items():
        z = torch.zeros(s.d)
        for k in range(len(s.blocks)):
            z = block(s.blocks[k], mix(s.mixes[k], layer(m, s.align, k), z))
        outs[m] = z
    if tower.inter is not None:
        s = tower.inter
        z = torch.zeros(s.d)
        for k in range(len(s.blocks)):
            h_img, h_txt = layer("image", s.align_image, k), layer("text", s.align_text, k)
            z = block(s.blocks[k], z + mix(s.mixes[k], h_img, h_txt))
        outs["inter"] = z
    order = [k for k in ("image", "text", "inter") if k in outs]
    heads = [tower.heads[k][1](tower.heads[k][0](outs[k])) for k in order]
    return tower.fusion(torch.cat(heads))


def test_gate_initialised_at_one_half():
    assert Mix(gated=True).gate().item() == 0.5
    assert Mix(gated=False).gate() is None


def test_side_block_init_and_identity_residual():
    block = SideBlock(768, 64)
    for lin in (block.down, block.up):
        assert lin.bias.abs().max() == 0
        assert abs(lin.weight.std().item() - 0.01) < 5e-4
        assert abs(lin.weight.mean().item()) < 5e-4
    x = torch.randn(3, 768)
    assert torch.allclose(block(x), x + block.up(F.relu(block.down(x))))


@pytest.mark.parametrize("streams", ["intra_inter", "intra", "inter"])
@pytest.mark.parametrize("fusion", ["gated", "add"])
def test_streams_match_loop_reference(streams, fusion):
    torch.manual_seed(0)
    store = make_store({"text": [16] * 4, "image": [16] * 4})
    tower = IISANTower(store, streams=streams, fusion=fusion, bottleneck=4, d_model=8)
    for p in tower.parameters():  # stronger than the 0.01 init so every term matters
        p.data.normal_(0, 0.3)
    randomise_gates(tower)
    ids = torch.tensor([[3, 1, 0], [7, 3, 12]])
    got = tower(ids)
    want = torch.stack([reference_embedding(tower, i) for i in ids.flatten().tolist()])
    assert got.shape == (2, 3, 8)
    torch.testing.assert_close(got.reshape(-1, 8), want, rtol=1e-5, atol=1e-5)
    expected_streams = {"intra_inter": 3, "intra": 2, "inter": 1}[streams]
    assert tower.fusion.in_features == 8 * expected_streams
    assert sum(1 for m in tower.modules() if isinstance(m, Mix) and m.weight is not None) == (
        4 * expected_streams if fusion == "gated" else 0
    )


def faithful_count() -> int:
    """Trainable parameters of faithful IISAN (d=768, r=64, 7 blocks x 3 streams) + SASRec,
    counted by hand from the spec."""
    d, r, blocks, streams, e = 768, 64, 7, 3, 64
    side_block = (d * r + r) + (r * d + d)
    gate = 1
    head = (d * d + d) + (d * e + e)
    fusion = 3 * e * e + e
    tower = streams * blocks * (side_block + gate) + streams * head + fusion
    attn = 4 * e * e  # bias-free Q, K, V, O
    ffn = (e * 256 + 256) + (256 * e + e)
    layer_norms = 2 * (2 * e)
    sasrec = 10 * e + 2 * e + 2 * (attn + ffn + layer_norms)  # positions + input LN + blocks
    return tower + sasrec


def test_faithful_parameter_count_and_no_alignment_params():
    store = make_store({"text": [768] * 7, "image": [768] * 7}, n_items=3)
    tower = build_item_tower("iisan", store)
    total = tower.num_trainable() + sum(p.numel() for p in SASRec().parameters())
    print(f"faithful IISAN + SASRec trainable parameters: {total:,}")
    assert total == faithful_count() == 4_113_877
    assert not any(
        isinstance(m, torch.nn.Linear)
        for a in tower.modules()
        if isinstance(a, LayerAlign)
        for m in a.modules()
    )


def test_text_only_store():
    store = make_store({"text": [24] * 3})
    tower = build_item_tower("iisan", store, streams="intra", bottleneck=4)
    assert list(tower.heads) == ["text"] and tower.fusion.in_features == 64
    out = tower(torch.tensor([[1, 2, 0]]))
    assert out.shape == (1, 3, 64) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="inter stream.*text and image"):
        build_item_tower("iisan", store, streams="intra_inter")


def test_layer_count_checks():
    with pytest.raises(ValueError, match="as many text as image layers"):
        build_item_tower("iisan", make_store({"text": [8] * 3, "image": [8] * 4}))


def test_differing_widths_align_per_layer():
    store = make_store({"text": [384] * 7, "image": EFFNET_WIDTHS})
    tower = build_item_tower("iisan", store)
    assert tower.intra["text"].d == 384 and tower.intra["image"].d == 320
    assert tower.inter.d == 320  # min(d_text, d_image), IISAN-Versa alignment
    n_maps = lambda a: sum(isinstance(m, torch.nn.Linear) for m in a.maps)  # noqa: E731
    assert n_maps(tower.intra["text"].align) == 0
    assert n_maps(tower.intra["image"].align) == 6  # every stage but the 320-wide last one
    assert n_maps(tower.inter.align_text) == 7 and n_maps(tower.inter.align_image) == 6
    out = tower(torch.tensor([[1, 5, 9, 0]]))
    out.sum().backward()
    assert out.shape == (1, 4, 64) and torch.isfinite(out).all()
    assert tower.intra["image"].align.maps[0].weight.grad is not None
    narrow = build_item_tower("iisan", store, stream_width={"text": 128, "image": None})
    assert narrow.intra["text"].d == 128 and narrow.inter.d == 128


def test_unique_ids_trick_equals_naive():
    torch.manual_seed(0)
    store = make_store({"text": [16] * 3, "image": [12] * 3})
    tower = build_item_tower("iisan", store, bottleneck=4)
    ids = torch.randint(0, 6, (5, 11))
    grads = []
    for unique in (True, False):
        tower.unique_items = unique
        tower.zero_grad()
        out = tower(ids)
        (out * torch.arange(out.numel()).reshape(out.shape).sin()).sum().backward()
        grads.append([p.grad.clone() for p in tower.parameters()])
        if unique:
            first = out.detach()
    torch.testing.assert_close(first, out.detach())
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_unique_ids_gradient_is_bitwise_reproducible():
    """Repeated ids: the gradient of ``embed_unique`` is the same sum in the same order on
    every call (an ``index_put`` scatter-back was not, so two runs of one seed drifted)."""
    from recsys.adapters import embed_unique

    torch.manual_seed(0)
    ids = torch.randint(1, 1500, (64, 51))  # a demo-sized training batch: many repeats
    table = torch.randn(1500, 64, requires_grad=True)
    upstream = torch.randn(64, 51, 64)
    grads = []
    for _ in range(10):
        table.grad = None
        out = embed_unique(lambda uniq: table[uniq] * 2, ids)
        (out * upstream).sum().backward()
        grads.append(table.grad.clone())
    torch.testing.assert_close(out, table.detach()[ids] * 2)
    assert all(torch.equal(g, grads[0]) for g in grads[1:])

def test_computes_in_module_dtype():
    store = make_store({"text": [16] * 2, "image": [16] * 2})
    tower = build_item_tower("iisan", store, bottleneck=4).double()
    assert tower(torch.tensor([1, 2])).dtype == torch.float64


@pytest.mark.parametrize("streams", ["intra_inter", "intra", "inter"])
def test_param_groups_cover_each_parameter_once(streams):
    tower = build_item_tower(
        "iisan", make_store({"text": [16] * 3, "image": [8] * 3}), streams=streams, bottleneck=4,
        lr_groups="by_module",
    )
    groups = tower.param_groups()
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(tower.parameters()))
    adapter = {id(p) for s in (tower.intra, tower.inter) if s for p in s.parameters()}
    assert set(map(id, groups["adapter"])) == adapter
    text_head = (
        {id(p) for p in tower.heads["text"].parameters()} if "text" in tower.heads else set()
    )
    assert set(map(id, groups["text_head"])) == text_head
    assert id(tower.fusion.weight) in set(map(id, groups["head"]))


def test_registry_and_id_tower():
    assert {"iisan", "id"} <= set(list_adapters())
    with pytest.raises(KeyError, match="unknown adapter"):
        build_item_tower("nope", None)
    tower = build_item_tower("id", None, num_items=9)
    assert tower.num_items == 9 and tower.num_trainable() == 10 * 64
    out = tower(torch.tensor([[0, 3]]))
    assert out.shape == (1, 2, 64) and out[0, 0].abs().sum() == 0
    assert tower.param_groups()["head"] == [tower.embedding.weight]
    assert build_item_tower("id", make_store({"text": [8]}, n_items=4)).num_items == 4
    assert math.isclose(
        tower.embedding.weight[1:].std().item(), (2 / (10 + 64)) ** 0.5, rel_tol=0.2
    )


# The official IISAN code's learning rate of each parameter (../shared/docs/reference-methods.md),
# written against this tower's parameter names.
OFFICIAL_LR = [  # (name prefix, lr), first match wins
    ("item_tower.intra.image.mixes.", 1e-4),   # image gates
    ("item_tower.intra.text.mixes.", 2e-4),    # text gates
    ("item_tower.inter.mixes.", 2e-4),         # inter gates
    ("item_tower.intra.", 1e-4),               # side blocks of the intra streams
    ("item_tower.inter.", 1e-4),               # side blocks of the inter stream
    ("item_tower.heads.image.0.", 1e-4),       # fc_cv, 768 -> 768
    ("item_tower.heads.text.0.", 5e-5),        # fc_bert, 768 -> 768
    ("item_tower.heads.", 2e-4),               # the 768 -> 64 layers, both inter head layers
    ("item_tower.fusion.", 2e-4),
    ("user_encoder.", 2e-4),
]
LRS = {"adapter": 1e-4, "text_head": 5e-5, "other": 2e-4}


def _lr_of_each_parameter(lr_groups: str) -> dict[str, tuple[float, int]]:
    """Faithful IISAN (768-d text and image, 7 layers) + SASRec: name -> (lr, scalars)."""
    from recsys.models.recommender import SequentialRecommender

    store = make_store({"text": [768] * 7, "image": [768] * 7}, n_items=3)
    model = SequentialRecommender(build_item_tower("iisan", store, lr_groups=lr_groups), SASRec())
    by_id = {id(p): g["lr"] for g in model.param_groups(LRS) for p in g["params"]}
    return {name: (by_id[id(p)], p.numel()) for name, p in model.named_parameters()}


def test_official_learning_rates_match_the_reference_table():
    official = _lr_of_each_parameter("official")
    want = {name: next(lr for prefix, lr in OFFICIAL_LR if name.startswith(prefix)) for name in official}
    assert {name: lr for name, (lr, _) in official.items()} == want
    # What lr_groups=by_module gives another rate: 18 tensors, 639,822 scalars.
    by_module = _lr_of_each_parameter("by_module")
    moved = sorted(name for name in official if official[name][0] != by_module[name][0])
    gates = [f"item_tower.{s}.mixes.{k}.weight" for s in ("inter", "intra.text") for k in range(7)]
    heads = [f"item_tower.heads.{h}.{t}" for h in ("image.0", "text.1") for t in ("bias", "weight")]
    assert moved == sorted(gates + heads)
    assert sum(official[name][1] for name in moved) == 639_822


@pytest.mark.parametrize("init", ["torch_default", "xavier_normal"])
def test_image_head_init(init):
    torch.manual_seed(0)
    store = make_store({"text": [768] * 2, "image": [768] * 2})
    tower = build_item_tower("iisan", store, image_head_init=init)
    second = tower.heads["image"][1]  # 768 -> 64
    if init == "xavier_normal":  # the official code: N(0, 2 / (768 + 64)), zero bias
        assert second.bias.abs().max() == 0
        assert abs(second.weight.std().item() - (2 / (768 + 64)) ** 0.5) < 2e-3
    else:  # PyTorch's Linear default: U(-1/sqrt(768), 1/sqrt(768)) weights and bias
        bound = 768 ** -0.5
        assert second.bias.abs().max() > 0 and second.weight.abs().max() <= bound
        assert abs(second.weight.std().item() - bound / 3 ** 0.5) < 2e-3
    assert tower.heads["text"][1].bias.abs().max() > 0  # the text head keeps the default either way


def test_build_item_tower_checks_options_like_a_config():
    store = make_store({"text": [8] * 3})
    with pytest.raises(ValueError, match="adapter.streams: 'both': Input should be"):
        build_item_tower("iisan", store, streams="both")
    with pytest.raises(ValueError, match="adapter.botleneck: unknown key"):
        build_item_tower("iisan", store, streams="intra", botleneck=4)
