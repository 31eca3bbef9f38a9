"""CROSSAN tower and MoMEF fusion: the math vs a hand-written reference, 2-4 modalities,
missing modalities, top-k routing, the load-balancing loss, modality subsets, training,
parameter count vs IISAN, parameter groups, logging through the training module."""

import pytest
import torch
from test_adapters import make_store  # same tests dir (pytest rootdir import)
from torch.nn import functional as F

from recsys.adapters import build_item_tower, check_groups
from recsys.adapters.crossan import CROSSANTower
from recsys.adapters.momef import MoMEF
from recsys.models.loss import log_popularity
from recsys.models.recommender import SequentialRecommender
from recsys.models.sasrec import SASRec
from recsys.train.module import RecommenderModule

WIDTHS = {"text": [16] * 4, "image": [12, 12, 8, 12], "video": [10] * 4, "audio": [6] * 4}
MODS = list(WIDTHS)


def store_of(n_mods: int, n_items: int = 12, missing: dict[str, list[int]] | None = None):
    """Random store over the first ``n_mods`` modalities; ``missing``: modality -> item ids
    whose rows are zeroed (the item lacks the modality)."""
    store = make_store({m: WIDTHS[m] for m in MODS[:n_mods]}, n_items=n_items)
    for m, ids in (missing or {}).items():
        store.table(m)[ids] = 0
    return store


def tower_of(store, **cfg) -> CROSSANTower:
    torch.manual_seed(0)
    return build_item_tower("crossan", store, bottleneck=4, cross_rank=3, d_model=8, **cfg)


def randomise(tower: torch.nn.Module) -> None:
    """Strong random weights (zero-initialised message maps and router included)."""
    torch.manual_seed(1)
    for p in tower.parameters():
        p.data.normal_(0, 0.3)


def reference_embedding(tower: CROSSANTower, item: int) -> torch.Tensor:
    """Hand-written CROSSAN + MoMEF (dense) forward of ONE item, from the module docstrings."""
    mods, cross, fusion = tower.modalities, tower.cross, tower.fusion
    h = {m: tower.store.gather(m, torch.tensor([item]))[0].float() for m in mods}  # [L, D]
    v = {m: float(h[m].abs().max() > 0) for m in mods}
    z = {m: torch.zeros(tower.streams[m].d) for m in mods}
    for layer in range(len(tower.store.widths[mods[0]])):
        u = {k: cross.down[k][layer].weight @ h[k][layer, : tower.store.widths[k][layer]] for k in mods}
        for i, m in enumerate(mods):
            s = sum(
                v[k] * torch.sigmoid(cross.logits[layer, i, j if j < i else j - 1] / 0.1) * u[k]
                for j, k in enumerate(mods)
                if k != m
            )
            c = cross.up[m][layer].weight @ s
            stream = tower.streams[m]
            x = h[m][layer, : tower.store.widths[m][layer]]
            align = stream.align.maps[layer]
            x = x if isinstance(align, torch.nn.Identity) else align.weight @ x + align.bias
            g = torch.sigmoid(stream.mixes[layer].weight / 0.1)
            x = g * x + (1 - g) * z[m] + c
            block = stream.blocks[layer]
            z[m] = x + block.up.weight @ F.relu(block.down.weight @ x + block.down.bias) + block.up.bias
    o = [(fusion.experts[m].weight @ z[m] + fusion.experts[m].bias) * v[m] for m in mods]
    if not any(v.values()):
        return fusion.empty
    logits = fusion.router.weight @ torch.cat(o) + fusion.router.bias
    valid = torch.tensor([v[m] > 0 for m in mods])
    p = torch.softmax(logits.masked_fill(~valid, float("-inf")), 0)
    return sum(p[i] * o[i] for i in range(len(mods)))


@pytest.mark.parametrize("n_mods", [2, 3, 4])
def test_shapes_and_reference_math(n_mods):
    store = store_of(n_mods, missing={"image": [2, 5]} | ({"text": [5]} if n_mods > 2 else {}))
    tower = tower_of(store)
    randomise(tower)
    ids = torch.tensor([[3, 1, 0], [2, 5, 12]])
    out = tower(ids)
    assert out.shape == (2, 3, 8) and torch.isfinite(out).all()
    want = torch.stack([reference_embedding(tower, i) for i in ids.flatten().tolist()])
    torch.testing.assert_close(out.reshape(-1, 8), want, rtol=1e-4, atol=1e-5)
    assert list(tower.streams) == list(tower.fusion.experts) == MODS[:n_mods]


def test_cross_adapters_start_silent():
    """U = 0 at init: every stream equals an IISAN intra stream over its own modality."""
    tower = tower_of(store_of(3))
    ids = torch.arange(1, 13)
    feats = {m: tower.store.gather(m, ids).float() for m in tower.modalities}
    messages = tower.cross(feats, torch.ones(12, 3, dtype=torch.bool))
    assert all(msg.abs().max() == 0 for msg in messages.values())
    assert torch.equal(
        tower.streams["text"](feats["text"], messages["text"]), tower.streams["text"](feats["text"])
    )


@pytest.mark.parametrize("fusion", ["momef", "concat"])
def test_missing_modalities_are_masked(fusion):
    # item 3 lacks image; item 4 lacks text and image (video only); item 5 lacks everything
    store = store_of(3, missing={"image": [3, 4, 5], "text": [4, 5], "video": [5]})
    tower = tower_of(store, fusion=fusion)
    randomise(tower)
    ids = torch.tensor([1, 3, 4, 5, 0])
    out = tower(ids)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in tower.parameters() if p.grad is not None)
    torch.testing.assert_close(out[3], tower.fusion.empty.detach())  # no modality at all
    torch.testing.assert_close(out[4], tower.fusion.empty.detach())  # padding
    if fusion == "momef":
        o = torch.randn(5, 3, 8)
        valid = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 0, 1], [0, 0, 0], [1, 1, 0]], dtype=torch.bool)
        weights, probs, _ = tower.fusion.route(o * valid[..., None], valid)
        assert torch.all(weights[~valid] == 0) and torch.all(probs[~valid] == 0)
        torch.testing.assert_close(weights.sum(-1), valid.any(-1).float())
        tower.gate_summary()
        tower(torch.tensor([3, 4]))  # both lack image
        assert tower.gate_summary()["image"] == 0.0


def test_missing_modality_is_never_read():
    """Item 3 lacks image: the image stream, expert and message projections cannot touch it."""
    tower = tower_of(store_of(3, missing={"image": [3]}))
    randomise(tower)
    before = tower(torch.tensor([3]))
    with torch.no_grad():
        for mod in (tower.streams["image"], tower.fusion.experts["image"], tower.cross.down["image"]):
            for p in mod.parameters():
                p.add_(1.0)
    torch.testing.assert_close(tower(torch.tensor([3])), before)


def test_top_k_routing_keeps_k_experts():
    store = store_of(4, missing={"audio": [2], "video": [3], "text": [3], "image": [3]})
    tower = tower_of(store, top_k=2)
    randomise(tower)
    ids = torch.arange(1, 13)
    feats = {m: tower.store.gather(m, ids).float() for m in tower.modalities}
    valid = torch.stack([f.abs().amax(dim=(1, 2)) > 0 for f in feats.values()], -1)
    o = torch.randn(12, 4, 8) * valid[..., None]
    weights, probs, selected = tower.fusion.route(o, valid)
    nonzero = (weights > 0).sum(-1)
    assert nonzero.tolist() == [2] * 2 + [1] + [2] * 9  # item 3 has audio only
    assert torch.equal(weights > 0, selected)
    torch.testing.assert_close(weights.sum(-1), torch.ones(12))
    lowest_kept = probs.masked_fill(~selected, float("inf")).amin(-1)
    assert torch.all(lowest_kept >= probs.masked_fill(selected | ~valid, float("-inf")).amax(-1))
    with pytest.raises(ValueError, match="top_k"):
        tower_of(store, top_k=4)


@pytest.mark.parametrize("top_k", [None, 1, 2])
def test_load_balancing_loss_matches_brute_force(top_k):
    torch.manual_seed(0)
    widths = {"text": 5, "image": 7, "video": 3}
    fusion = MoMEF(widths, d_model=4, top_k=top_k, aux_loss_weight=0.3)
    torch.nn.init.normal_(fusion.router.weight, std=0.5)
    z = {e: torch.randn(9, d) for e, d in widths.items()}
    valid = torch.rand(9, 3) > 0.3
    valid[0] = False  # not routed
    valid[1] = torch.tensor([True, False, False])
    fusion(z, valid)
    got = fusion.aux_loss()

    k = top_k or 1
    probs, choices = [], []
    for i in range(9):
        idx = [e for e in range(3) if valid[i, e]]
        if not idx:
            continue
        o = torch.cat([fusion.experts[e](z[e][i]) * valid[i, j] for j, e in enumerate(widths)])
        logits = fusion.router(o)
        p = torch.zeros(3)
        p[idx] = torch.softmax(logits[idx], 0)
        probs.append(p)
        choices.append(sorted(idx, key=lambda e: -p[e].item())[:k])
    p_mean = torch.stack(probs).mean(0)
    total = sum(len(c) for c in choices)
    f = torch.tensor([sum(e in c for c in choices) / total for e in range(3)])
    want = 0.3 * 3 * (f * p_mean).sum()
    torch.testing.assert_close(got, want)
    assert got.requires_grad
    assert MoMEF(widths, 4).aux_loss() is None  # weight 0: no loss


def test_config_errors():
    with pytest.raises(ValueError, match="at least two"):
        tower_of(store_of(1))
    with pytest.raises(ValueError, match="as many kept layers"):
        tower_of(make_store({"text": [8] * 7, "image": [8] * 5}))
    with pytest.raises(ValueError, match="fusion"):
        tower_of(store_of(2), fusion="sum")
    with pytest.raises(ValueError, match="top_k must be in 1..1"):
        tower_of(store_of(2), top_k=2)


def test_few_steps_decrease_the_loss():
    store = store_of(4, n_items=20, missing={"audio": [1, 2, 3], "video": [4]})
    model = SequentialRecommender(tower_of(store, top_k=2), SASRec(d_model=8, ffn_dim=16, max_len=10)).eval()
    items = torch.randint(1, 21, (6, 11), generator=torch.Generator().manual_seed(0))
    log_pop = log_popularity(torch.ones(21))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = model.training_loss(items, log_pop)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_parameter_count_vs_iisan_faithful_768():
    store = make_store({"text": [768] * 7, "image": [768] * 7}, n_items=3)
    crossan = build_item_tower("crossan", store)
    iisan = build_item_tower("iisan", store)
    d, r, rc, e, n_layers, n_mods = 768, 32, 16, 64, 7, 2
    stream = n_layers * ((d * r + r) + (r * d + d) + 1)  # side blocks + gates
    cross = n_mods * n_layers * (d * rc + rc * d) + n_layers * n_mods * (n_mods - 1)
    fusion = n_mods * (d * e + e) + (n_mods * e * n_mods + n_mods) + e  # experts, router, empty
    assert crossan.num_trainable() == n_mods * stream + cross + fusion == 1_142_174
    sasrec = sum(p.numel() for p in SASRec().parameters())
    total, reference = crossan.num_trainable() + sasrec, iisan.num_trainable() + sasrec
    fewer = 1 - total / reference
    print(f"CROSSAN + SASRec {total:,} vs IISAN + SASRec {reference:,}: {fewer:.1%} fewer")
    assert reference == 4_113_877 and fewer >= 0.57


@pytest.mark.parametrize("fusion", ["momef", "concat"])
def test_param_groups_cover_each_parameter_once(fusion):
    tower = tower_of(store_of(3), fusion=fusion)
    groups = tower.param_groups()
    check_groups(tower, groups)
    assert {id(p) for p in groups["text_head"]} == {id(p) for p in tower.fusion.experts["text"].parameters()}
    adapter = {id(p) for mod in (tower.streams, tower.cross) for p in mod.parameters()}
    assert {id(p) for p in groups["adapter"]} == adapter
    assert id(tower.fusion.empty) in {id(p) for p in groups["head"]}
    if fusion == "concat":
        assert tower.aux_loss() is None and tower.gate_summary() == {}


def test_gate_summary_accumulates_until_reset():
    tower = tower_of(store_of(2, missing={"image": [1, 2]}))
    tower(torch.tensor([1, 2]))  # text only: text weight 1
    tower(torch.tensor([3, 4]))  # nearly uniform router at init: about 0.5 / 0.5
    summary = tower.gate_summary(reset=False)
    assert summary == pytest.approx({"text": 0.75, "image": 0.25}, abs=0.02)
    assert tower.gate_summary() == summary and tower.gate_summary() == {}
    tower(torch.tensor([0]))  # padding: nothing routed
    assert tower.gate_summary() == {}


def test_training_module_logs_aux_loss_and_gates(monkeypatch):
    store = store_of(3, n_items=20)
    model = SequentialRecommender(tower_of(store), SASRec(d_model=8, ffn_dim=16, max_len=10))
    module = RecommenderModule(model, torch.ones(21), {"adapter": 1e-3, "text_head": 1e-3, "other": 1e-3})
    logged = {}
    monkeypatch.setattr(
        module,
        "log",
        lambda name, value, **kw: logged.__setitem__(
            name, float(value.detach() if torch.is_tensor(value) else value)
        ),
    )
    items = torch.randint(1, 21, (4, 11), generator=torch.Generator().manual_seed(0))
    module.training_step({"items": items}, 0)
    assert {"train/loss", "train/aux_loss", "train/gate/text", "train/gate/image", "train/gate/video"} <= set(
        logged
    )
    assert sum(logged[f"train/gate/{m}"] for m in MODS[:3]) == pytest.approx(1.0)
    val = {
        "inputs": items[:, 1:],
        "target": items[:, 0],
        "history": torch.zeros(4, 1, dtype=torch.long),
        "user": torch.arange(4),
    }
    with torch.no_grad():
        module.on_validation_epoch_start()
        module.validation_step(val, 0)
    module.on_validation_epoch_end()
    assert logged["val/gate/text"] == pytest.approx(1 / 3, abs=0.03)  # nearly uniform at init
