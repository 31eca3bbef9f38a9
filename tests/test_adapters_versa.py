"""IISAN-Versa: group layer dropping for deep encoders, an asymmetric tower (4096-d LLM-like
text beside a 192-d image encoder) that trains, its alignment maps and parameter count."""

import pytest
import torch
from test_adapters import make_store  # same tests dir (pytest rootdir import)

from recsys.adapters import build_item_tower
from recsys.adapters.layer_schedule import group_layer_schedule
from recsys.adapters.side_block import SideBlock
from recsys.models.loss import log_popularity
from recsys.models.recommender import SequentialRecommender
from recsys.models.sasrec import SASRec

# depth D -> kept hidden-state entries, by hand: s = ceil(D / 6) counted back from layer D,
# the first group takes the remainder; plus entry 0 (the embedding output).
GROUPED = {
    12: [0, 2, 4, 6, 8, 10, 12],  # s = 2 (IISAN's LayerDrop)
    24: [0, 4, 8, 12, 16, 20, 24],  # s = 4
    28: [0, 3, 8, 13, 18, 23, 28],  # s = 5, first group 3 layers
    32: [0, 2, 8, 14, 20, 26, 32],  # s = 6, the Versa paper's example
    80: [0, 10, 24, 38, 52, 66, 80],  # s = 14, first group 10 layers
}
TEXT_LAYERS = GROUPED[32]  # a 32-layer, 4096-d decoder LLM: 33 entries -> 7
IMAGE_LAYERS = list(range(7))  # a 6-block, 192-d ViT-Tiny-like encoder: all 7 entries


@pytest.mark.parametrize("depth", sorted(GROUPED))
def test_group_layer_dropping(depth):
    kept = group_layer_schedule(num_entries=depth + 1, groups=6)
    assert kept == GROUPED[depth] and len(kept) == 7


def versa_tower():
    torch.manual_seed(0)
    store = make_store({"text": [4096] * 7, "image": [192] * 7}, n_items=12)
    return build_item_tower("iisan", store)


def test_versa_alignment_maps_only_the_wider_modality():
    tower = versa_tower()
    assert tower.intra["text"].d == 4096 and tower.intra["image"].d == 192 and tower.inter.d == 192
    linear = lambda align: [isinstance(m, torch.nn.Linear) for m in align.maps]  # noqa: E731
    assert linear(tower.inter.align_text) == [True] * 7  # 4096 -> 192 in every inter block
    assert [m.in_features for m in tower.inter.align_text.maps] == [4096] * 7
    assert linear(tower.inter.align_image) == [False] * 7  # already the inter width
    assert not any(linear(tower.intra["text"].align) + linear(tower.intra["image"].align))


def test_versa_parameter_count():
    d_t, d_i, r, e, blocks = 4096, 192, 64, 64, 7

    def side(d: int) -> int:
        return (d * r + r) + (r * d + d) + 1  # side block + its gate

    def head(d: int) -> int:
        return (d * d + d) + (d * e + e)

    intra = blocks * side(d_t) + blocks * side(d_i)
    inter = blocks * side(d_i) + blocks * (d_t * d_i + d_i)  # + per-layer text -> 192 maps
    fusion = 3 * e * e + e
    want = intra + inter + head(d_t) + 2 * head(d_i) + fusion
    assert versa_tower().num_trainable() == want == 26_707_861


def test_versa_tower_trains_one_step():
    tower = versa_tower()
    model = SequentialRecommender(tower, SASRec(max_len=10))
    items = torch.randint(1, 13, (3, 11), generator=torch.Generator().manual_seed(0))
    items[0, :4] = 0
    opt = torch.optim.Adam(model.param_groups({"adapter": 1e-4, "text_head": 5e-5, "other": 2e-4}))
    loss = model.training_loss(items, log_popularity(torch.ones(13)))
    loss.backward()
    assert torch.isfinite(loss)
    blocks = [m for m in tower.modules() if isinstance(m, SideBlock)]
    assert len(blocks) == 3 * 7
    for block in blocks:
        for lin in (block.down, block.up):
            assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    before = tower.intra["text"].blocks[0].down.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, tower.intra["text"].blocks[0].down.weight)


def test_versa_depths_must_match_after_grouping():
    store = make_store({"text": [64] * 7, "image": [32] * 5})
    with pytest.raises(ValueError, match="as many text as image layers"):
        build_item_tower("iisan", store)
    build_item_tower("iisan", store, streams="intra")  # no inter stream: depths may differ


def test_select_entries_picks_by_value_among_what_is_on_offer():
    from recsys.adapters.layer_schedule import select_entries

    full = {"text": list(range(13)), "image": list(range(13))}
    assert select_entries(full, layer_groups=6) == {m: [0, 2, 4, 6, 8, 10, 12] for m in full}
    # a Versa cache that kept only the 7 group entries of a 32-layer LLM: the rule picks among them
    cached = {"text": GROUPED[32], "image": list(range(8))}  # MiniLM-like 7 + EfficientNet 8
    assert select_entries(cached, layer_groups=6) == {"text": GROUPED[32], "image": [0, 2, 3, 4, 5, 6, 7]}
    # no layer dropping: every entry of the shallowest, the deeper grouped to as many
    assert select_entries({"text": list(range(7)), "image": list(range(8))}) == {
        "text": list(range(7)), "image": [0, 2, 3, 4, 5, 6, 7]}
    assert select_entries(full, layers=[0, 6, 12]) == {"text": [0, 6, 12], "image": [0, 6, 12]}
    assert select_entries(full, layers={"text": [1], "image": [2]}) == {"text": [1], "image": [2]}
    assert select_entries(cached, last_only=True) == {"text": [32], "image": [7]}
    with pytest.raises(ValueError, match=r"selects text entries \[3\] that are not on offer"):
        select_entries(cached, layers=[0, 3])
    with pytest.raises(ValueError, match="no schedule for modalities"):
        select_entries(full, layers={"text": [0]})
