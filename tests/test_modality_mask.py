"""Modality dropout and subset evaluation (recsys/adapters/modality_mask.py): dropout
statistics, the keep-one rule, training-only dropout, reproducibility, p = 0 exactly the old
behaviour, subset evaluation zeroing rows, CROSSAN skipping absent modalities (same
embeddings, fewer FLOPs), gate pruning's choices and counted savings, the config checks."""

import math

import pytest
import torch
from test_adapters import make_store  # same tests dir (pytest rootdir import)

from recsys.adapters import build_item_tower
from recsys.adapters.modality_mask import (
    draw_kept,
    evaluating_with,
    knob_problems,
    resample_dropout,
    set_eval_modalities,
    set_modality_dropout,
    subset_name,
)
from recsys.models.recommender import SequentialRecommender
from recsys.models.sasrec import SASRec
from recsys.train.cost import count_flops, feature_bytes
from recsys.train.modality_eval import choose_pruned, modality_gate_weights, prune_by_gates
from recsys.train.module import RecommenderModule

WIDTHS = {"text": [16] * 4, "image": [12, 12, 8, 12], "video": [10] * 4}


def store_of(mods=("text", "image"), n_items=12, missing=None):
    store = make_store({m: WIDTHS[m] for m in mods}, n_items=n_items)
    for m, ids in (missing or {}).items():
        store.table(m)[ids] = 0
    return store


def crossan(store):
    torch.manual_seed(0)
    tower = build_item_tower("crossan", store, bottleneck=4, cross_rank=3, d_model=8)
    torch.manual_seed(1)
    for p in tower.parameters():  # strong random weights: zero-initialised maps included
        p.data.normal_(0, 0.3)
    return tower


def module_of(tower, n_items=12):
    model = SequentialRecommender(tower, SASRec(d_model=8, ffn_dim=16, max_len=10))
    lrs = {"adapter": 1e-3, "text_head": 1e-3, "other": 1e-3}
    return RecommenderModule(model, torch.ones(n_items + 1), lrs)


def rows_kept(store, ids):
    """[n, M] bool: which modality rows ``gather`` returns non-zero."""
    return torch.stack([store.gather(m, ids).abs().amax((-2, -1)) > 0 for m in store.modalities], -1)


# ---- the dropout rule -------------------------------------------------------------------
@pytest.mark.parametrize(("p", "n_mods"), [(0.3, 2), (0.5, 3), (0.9, 2)])
def test_dropped_fraction_per_modality_matches_the_rule_within_5_sigma(p, n_mods):
    n = 20_000
    torch.manual_seed(0)
    kept = draw_kept(torch.ones(n, n_mods, dtype=torch.bool), p)
    # Each modality dropped with p; all M dropped (p^M) -> one of them restored uniformly.
    expected = p - p**n_mods / n_mods
    sigma = math.sqrt(expected * (1 - expected) / n)
    for column in (~kept).float().mean(0).tolist():
        assert abs(column - expected) < 5 * sigma, (column, expected)
    assert kept.any(-1).all()  # never every modality dropped
    lost_all_but_one = (kept.sum(-1) == 1).float().mean().item()
    assert lost_all_but_one > 0  # the rule does drop down to one modality


def test_absent_modalities_are_never_kept_and_a_present_one_always_is():
    present = torch.tensor([[True, False], [False, True], [True, True], [False, False]]).repeat(500, 1)
    torch.manual_seed(0)
    kept = draw_kept(present, 0.7)
    assert not (kept & ~present).any()  # a missing modality is never "kept"
    assert (kept.any(-1) == present.any(-1)).all()  # a single present modality is always kept
    assert (kept[0::4, 0]).all() and (kept[1::4, 1]).all()


def test_store_dropout_is_per_batch_training_only_and_reproducible():
    store = store_of(n_items=400, missing={"image": [1, 2, 3]})
    set_modality_dropout(store, 0.5)
    ids = torch.arange(1, 401)
    torch.manual_seed(7)
    resample_dropout(store)
    first = rows_kept(store, ids)
    assert first.any(-1).all() and not first[:3, 1].any() and first[:3, 0].all()  # items 1-3: text only
    assert 0.2 < (~first[3:]).float().mean() < 0.5  # some rows dropped (expected 0.375)
    again = rows_kept(store, torch.cat([ids, ids]))  # one draw per batch: an id always alike
    assert torch.equal(again[:400], first) and torch.equal(again[400:], first)
    store.eval()
    assert rows_kept(store, ids)[3:].all()  # no dropout in eval mode
    store.train()
    torch.manual_seed(7)
    resample_dropout(store)
    assert torch.equal(rows_kept(store, ids), first)  # the same seed, the same draw
    resample_dropout(store)
    assert not torch.equal(rows_kept(store, ids), first)  # the next batch draws anew


def test_no_dropout_draws_nothing_and_changes_nothing():
    store = store_of()
    tower = crossan(store)
    ids = torch.arange(0, 13)
    before = tower(ids)
    state = torch.get_rng_state()
    set_modality_dropout(tower, 0.0)
    resample_dropout(tower)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(tower(ids), before, rtol=0, atol=0)


def test_the_training_module_draws_before_every_batch(monkeypatch):
    store = store_of(n_items=40)
    module = module_of(crossan(store), n_items=40)
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    set_modality_dropout(module, 0.5)
    items = torch.randint(1, 41, (4, 11), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    module.on_train_batch_start({"items": items}, 0)
    first = store.mask._kept.clone()
    module.on_train_batch_start({"items": items}, 1)
    assert not torch.equal(store.mask._kept, first)
    assert torch.isfinite(module.training_step({"items": items}, 1))


# ---- subset evaluation ------------------------------------------------------------------
def test_eval_modalities_zero_the_others_in_eval_mode_only():
    store = store_of(("text", "image", "video"))
    ids = torch.arange(1, 13)
    set_eval_modalities(store, ["image"])
    assert rows_kept(store, ids).all()  # training mode: every modality
    store.eval()
    assert rows_kept(store, ids).tolist() == [[False, True, False]] * 12
    with evaluating_with(store, ["text", "video"]):
        assert rows_kept(store, ids).tolist() == [[True, False, True]] * 12
    assert store.mask.eval_modalities == ("image",)  # restored
    with pytest.raises(ValueError, match="non-empty subset"):
        set_eval_modalities(store, ["audio"])
    with pytest.raises(ValueError, match="non-empty subset"):
        set_eval_modalities(store, [])


@pytest.mark.parametrize("kept", [["text"], ["image", "video"]])
def test_crossan_skips_absent_modalities_same_embeddings_fewer_flops(kept):
    mods = ("text", "image", "video")
    tower = crossan(store_of(mods)).eval()
    ids = torch.arange(0, 13)
    zeroed = crossan(store_of(mods, missing={m: list(range(13)) for m in mods if m not in kept})).eval()
    with torch.no_grad():
        every, flops_every = count_flops(lambda: tower(ids))
        with evaluating_with(tower, kept):
            skipped, flops_skipped = count_flops(lambda: tower(ids))
        want = zeroed(ids)  # the same items with those rows zero in the data: not skipped
    torch.testing.assert_close(skipped, want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(skipped, every)
    assert flops_skipped < flops_every * (len(kept) + 0.5) / len(mods)


def test_subset_names_are_sorted_and_joined():
    assert subset_name(["text", "image"]) == "image+text" == subset_name(("image", "text"))
    assert subset_name(["image"]) == "image"


# ---- gate pruning -----------------------------------------------------------------------
def test_pruning_never_removes_every_modality():
    assert choose_pruned({"text": 0.8, "image": 0.15, "video": 0.05}, 0.2) == ["image", "video"]
    assert choose_pruned({"text": 0.5, "image": 0.5}, 0.2) == []
    assert choose_pruned({"text": 0.4, "image": 0.6}, 0.9) == ["text"]  # the heaviest stays
    experts = {"text": "text", "title": "text", "image": "image"}  # two experts reading text
    weights = modality_gate_weights({"text": 0.3, "title": 0.2, "image": 0.5}, experts)
    assert weights == {"text": 0.5, "image": 0.5}


def test_prune_by_gates_tests_without_the_pruned_and_counts_the_saving():
    store = store_of(("text", "image", "video"))
    module = module_of(crossan(store))
    seen = []

    def test(modalities):
        seen.append(list(modalities))
        return {"hr@10": 0.5}

    metrics = {"val": {"hr@10": 0.4, "gate/text": 0.7, "gate/image": 0.25, "gate/video": 0.05},
               "test": {"hr@10": 0.6}}
    pruning = prune_by_gates(module, metrics, 0.1, test)
    assert pruning["pruned"] == ["video"] and pruning["kept"] == ["text", "image"]
    assert seen == [["text", "image"]]
    assert pruning["test"] == {"hr@10": 0.5} and pruning["gate_weights"]["video"] == 0.05
    flops, stored = pruning["cost_saved"]["item_flops_per_item"], pruning["cost_saved"]["feature_bytes"]
    assert 0 < flops["pruned"] < flops["all"] and flops["saved"] == flops["all"] - flops["pruned"]
    assert stored["saved"] == store.table("video").nbytes == feature_bytes(module, ["video"])
    assert stored["all"] == feature_bytes(module) and 0 < stored["saved_fraction"] < 1
    assert store.mask.eval_modalities is None  # back to every modality
    nothing = prune_by_gates(module, metrics, 0.01, test)
    assert nothing["pruned"] == [] and nothing["test"] == {"hr@10": 0.6} and len(seen) == 1
    assert nothing["cost_saved"]["item_flops_per_item"]["saved"] == 0
    assert prune_by_gates(module, metrics, None, test) is None


# ---- config checks ----------------------------------------------------------------------
def test_knob_problems_name_the_key():
    def lines(cached=True, mods=("text", "image"), dropout=0.0, ev=None, prune=None):
        return knob_problems("iisan", cached, list(mods), dropout, ev or {}, prune or {})

    assert lines(dropout=0.3, ev={"modalities": ["text"], "modality_subsets": [["image"]]}) == []
    assert lines(dropout=0.3, mods=["text"])[0].startswith("adapter.modality_dropout: 0.3: ")
    assert lines(dropout=0.3, cached=False)[0].endswith("adapter 'iisan' reads no cache")
    assert lines(ev={"modalities": ["video"]})[0].startswith("eval.modalities: ['video']: must be")
    bad_subset = lines(ev={"modality_subsets": [["text"], ["audio"]]})
    assert bad_subset[0].startswith("eval.modality_subsets: ['audio']")
    assert lines(prune={"gate_threshold": 0.1}, mods=["text"])[0].startswith("prune.gate_threshold: 0.1:")
    conflict = lines(prune={"gate_threshold": 0.1}, ev={"modalities": ["text"]})
    assert "leave eval.modalities null" in conflict[0]
