"""SASRec user encoder (causality, padding invariance, NaN safety) and SequentialRecommender
(embeddings, losses, optimiser groups)."""

import pytest
import torch
from test_adapters import make_store  # same tests dir (pytest rootdir import)

from recsys.adapters import build_item_tower
from recsys.models.loss import log_popularity
from recsys.models.recommender import SequentialRecommender
from recsys.models.sasrec import SASRec


def test_sasrec_is_causal():
    torch.manual_seed(0)
    enc = SASRec().eval()
    emb = torch.randn(3, 10, 64)
    mask = torch.ones(3, 10, dtype=torch.bool)
    out = enc(emb, mask)
    emb2 = emb.clone()
    emb2[:, 6] = torch.randn(3, 64)
    out2 = enc(emb2, mask)
    torch.testing.assert_close(out[:, :6], out2[:, :6])
    assert not torch.allclose(out[:, 6:], out2[:, 6:])


def test_sasrec_left_padding_invariance():
    torch.manual_seed(0)
    enc = SASRec().eval()
    real = torch.randn(2, 6, 64)
    short = enc(real, torch.ones(2, 6, dtype=torch.bool))
    padded_emb = torch.cat([torch.randn(2, 4, 64), real], 1)  # garbage at pad slots
    padded_mask = torch.cat(
        [torch.zeros(2, 4, dtype=torch.bool), torch.ones(2, 6, dtype=torch.bool)], 1
    )
    padded = enc(padded_emb, padded_mask)
    torch.testing.assert_close(padded[:, 4:], short, rtol=1e-5, atol=1e-5)
    assert padded[:, :4].abs().sum() == 0


def test_sasrec_all_padding_rows_are_finite():
    enc = SASRec()  # train mode: dropout on
    emb = torch.randn(3, 10, 64, requires_grad=True)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[1, 7:] = True
    out = enc(emb, mask)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(emb.grad).all()
    assert out[0].abs().sum() == 0
    with pytest.raises(ValueError, match="max_len"):
        enc(torch.randn(1, 11, 64), torch.ones(1, 11, dtype=torch.bool))


def test_sasrec_parameter_count():
    assert sum(p.numel() for p in SASRec().parameters()) == 100_224


def make_model(adapter: str = "iisan") -> SequentialRecommender:
    torch.manual_seed(0)
    store = make_store({"text": [16] * 3, "image": [12] * 3}, n_items=20)
    tower = build_item_tower(adapter, store, **({"bottleneck": 4} if adapter == "iisan" else {}))
    return SequentialRecommender(tower, SASRec(max_len=10))


def batch() -> torch.Tensor:
    items = torch.randint(1, 21, (4, 11))
    items[0, :5] = 0
    items[3, :] = 0  # an all-padding user
    return items


@pytest.mark.parametrize("adapter", ["iisan", "id"])
@pytest.mark.parametrize("loss", ["in_batch", "full"])
def test_training_loss_backward(adapter, loss):
    model = make_model(adapter)
    log_pop = log_popularity(torch.randint(0, 5, (21,)).float())
    value = model.training_loss(batch(), log_pop, loss=loss)
    value.backward()
    assert torch.isfinite(value)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    with pytest.raises(ValueError, match="loss must be"):
        model.training_loss(batch(), log_pop, loss="bpr")


@pytest.mark.parametrize("loss", ["in_batch", "full"])
def test_predict_mask_selects_the_trained_positions(loss):
    """The default mask is every position after a real input; a last-only mask trains the
    last position alone (train_targets=prefixes): the same as that position's loss."""
    torch.manual_seed(0)
    model, items = make_model("id").eval(), batch()  # eval: no dropout, equal passes
    log_pop = log_popularity(torch.randint(1, 5, (21,)).float())
    default = (items[:, :-1] != 0) & (items[:, 1:] != 0)
    assert torch.equal(model.training_loss(items, log_pop, loss=loss),
                       model.training_loss(items, log_pop, loss=loss, predict=default))
    last = torch.zeros_like(default)
    last[:, -1] = default[:, -1]
    one = model.training_loss(items, log_pop, loss=loss, predict=last)
    assert torch.isfinite(one) and not torch.equal(one, model.training_loss(items, log_pop, loss=loss))
    if loss == "full":  # per-position cross-entropy: last-only = the mean of the last targets' losses
        states = model.user_states(items[:, :-1])[:, -1][default[:, -1]]
        logits = states @ model.all_item_embeddings().T
        logits[:, 0] = float("-inf")
        history_masked = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, items[default[:, -1]], True)
        target = items[default[:, -1], -1]
        history_masked[torch.arange(len(target)), target] = False
        want = torch.nn.functional.cross_entropy(logits.masked_fill(history_masked, float("-inf")), target)
        assert torch.allclose(one, want, atol=1e-5)


def test_embeddings_and_user_embedding():
    model = make_model().eval()
    with torch.no_grad():
        all_emb = model.all_item_embeddings(chunk_size=7)
        assert all_emb.shape == (21, 64) and all_emb[0].abs().sum() == 0
        torch.testing.assert_close(all_emb[1:], model.item_embeddings(torch.arange(1, 21)))
        inputs = batch()[:, 1:]
        user = model.user_embedding(inputs)
        assert user.shape == (4, 64) and torch.isfinite(user).all()
        states = model.user_encoder(model.item_embeddings(inputs), inputs != 0)
        torch.testing.assert_close(user, states[:, -1])


@pytest.mark.parametrize("adapter", ["iisan", "id"])
def test_param_groups_cover_every_trainable_parameter_once(adapter):
    model = make_model(adapter)
    lrs = {"adapter": 1e-4, "text_head": 5e-5, "other": 2e-4}
    groups = model.param_groups(lrs)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(1 for p in model.parameters() if p.requires_grad)
    by_name = {g["name"]: g for g in groups}
    assert all(by_name[n]["lr"] == lrs[n] for n in by_name)
    encoder = {id(p) for p in model.user_encoder.parameters()}
    assert encoder <= {id(p) for p in by_name["other"]["params"]}
    if adapter == "id":
        assert set(by_name) == {"other"}
    torch.optim.Adam(groups)  # a valid optimiser spec


@pytest.mark.parametrize("loss", ["in_batch", "full"])
def test_training_loss_adds_the_item_tower_aux_loss(loss):
    torch.manual_seed(0)
    store = make_store({"text": [16] * 3, "image": [12] * 3, "audio": [8] * 3}, n_items=20)
    tower = build_item_tower("crossan", store, bottleneck=4, cross_rank=2, aux_loss_weight=0.5)
    torch.nn.init.normal_(tower.fusion.router.weight, std=0.5)  # an unbalanced router
    model = SequentialRecommender(tower, SASRec(max_len=10)).eval()  # no dropout
    items, log_pop = batch(), log_popularity(torch.randint(0, 5, (21,)).float())
    total = model.training_loss(items, log_pop, loss=loss)
    aux = tower.aux_loss()
    assert aux is not None and aux > 0 and aux.requires_grad
    tower.fusion.aux_loss_weight = 0.0
    plain = model.training_loss(items, log_pop, loss=loss)
    assert tower.aux_loss() is None
    torch.testing.assert_close(total, plain + aux)


def test_normal_init_starts_item_and_position_tables_alike():
    """Xavier gives a 20k-item table ~0.01 std and the 10-row position table ~0.16; the
    ``normal`` scheme draws both from N(0, 0.02), as RecBole's SASRec."""
    from recsys.adapters.id_embedding import IDEmbeddingTower

    torch.manual_seed(0)
    xavier_items, xavier = IDEmbeddingTower(20_000).embedding.weight[1:], SASRec()
    assert xavier_items.std() < 0.011 and xavier.positions.weight.std() > 0.14
    items = IDEmbeddingTower(20_000, init="normal").embedding.weight
    encoder = SASRec(init="normal", init_std=0.02)
    assert abs(items[1:].std().item() - 0.02) < 1e-3 and items[0].abs().sum() == 0  # the pad row stays zero
    assert abs(encoder.positions.weight.std().item() - 0.02) < 5e-3
    assert abs(encoder.blocks[0].attn.q.weight.std().item() - 0.02) < 2e-3
    assert isinstance(SASRec(activation="gelu").blocks[0].ffn[1], torch.nn.GELU)


def test_weight_decay_reaches_every_adam_group():
    from recsys.adapters.id_embedding import IDEmbeddingTower
    from recsys.train.module import RecommenderModule

    model = SequentialRecommender(IDEmbeddingTower(30), SASRec())
    lrs = {"adapter": 1e-4, "text_head": 5e-5, "other": 2e-4}
    module = RecommenderModule(model, torch.ones(31), lrs=lrs, weight_decay=1e-5)
    assert all(g["weight_decay"] == 1e-5 for g in module.configure_optimizers().param_groups)
