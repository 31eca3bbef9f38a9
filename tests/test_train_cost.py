"""Counted costs (recsys.train.cost) against hand counts on small models, real and fake."""

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from recsys.adapters import tower_class
from recsys.adapters.id_embedding import IDEmbeddingTower  # noqa: F401  (registers "id")
from recsys.models.sasrec import SASRec
from recsys.train.cost import (
    count_flops,
    feature_bytes,
    measure_costs,
    model_state_bytes,
    query_latency,
    saved_tensor_bytes,
    train_step_costs,
)

B, D_IN, D_HID, D_OUT = 5, 8, 6, 4


def two_layers() -> nn.Module:
    return nn.Sequential(nn.Linear(D_IN, D_HID), nn.ReLU(), nn.Linear(D_HID, D_OUT))


def test_flops_of_a_linear_model_match_a_hand_count():
    model = two_layers()
    x = torch.randn(B, D_IN)
    forward = 2 * B * (D_IN * D_HID + D_HID * D_OUT)  # one multiply-add = 2 FLOPs; biases not counted
    _, flops = count_flops(lambda: model(x))
    assert flops == forward

    # backward: weight gradients of both layers (2x the forward) and the input gradient of the
    # second layer (x needs none): 2·B·D_HID·D_OUT more
    _, flops = count_flops(lambda: model(x).sum().backward())
    assert flops == forward + forward + 2 * B * D_HID * D_OUT



@pytest.mark.parametrize("groups", [1, 4, 16])
@pytest.mark.parametrize("trains", ["input and weight", "input only", "weight only"])
def test_grouped_conv_backward_flops_equal_its_dense_convolutions(groups, trains):
    """A grouped convolution is ``groups`` dense convolutions over channel slices: counted
    forward and backward, both ways give the same FLOPs (torch's own formula counts the
    grouped weight gradient ``groups`` times over)."""
    c, out = 16, 32
    grouped = nn.Conv2d(c, out, 3, padding=1, groups=groups, bias=False)
    dense = [nn.Conv2d(c // groups, out // groups, 3, padding=1, bias=False) for _ in range(groups)]
    x = torch.randn(2, c, 10, 10, requires_grad=trains != "weight only")
    for conv in (grouped, *dense):
        conv.requires_grad_(trains != "input only")

    def split():
        parts = x.split(c // groups, dim=1)
        return torch.cat([conv(part) for conv, part in zip(dense, parts, strict=True)], dim=1)

    _, want = count_flops(lambda: split().sum().backward())
    _, got = count_flops(lambda: grouped(x).sum().backward())
    assert got == want
    _, forward = count_flops(lambda: grouped(x))
    assert got == forward * (1 + (trains == "input and weight") + 1)

def test_saved_bytes_count_activations_once_and_never_parameters():
    model = two_layers()
    x = torch.randn(B, D_IN)
    params = {p.untyped_storage()._cdata: 0 for p in model.parameters()}
    with saved_tensor_bytes(exclude=params) as saved:
        model(x).sum()
    # saved for backward: x (input of layer 1), the ReLU output (input of layer 2; ReLU's own
    # backward saves that same output): B·D_IN + B·D_HID floats
    assert sum(saved.values()) == 4 * (B * D_IN + B * D_HID)

    y = torch.randn(4, 3, requires_grad=True) * 2
    with saved_tensor_bytes() as saved:
        ((y[:2] * y[:2]).sum() + (y[2:] * y[2:]).sum())
    assert sum(saved.values()) == y.untyped_storage().nbytes()  # two views of one storage


def test_model_state_counts_params_grads_and_adam_moments():
    model = two_layers()
    model[0].requires_grad_(False)  # a frozen layer: its weights count, no gradient or moments
    frozen = sum(p.numel() for p in model[0].parameters())
    trained = sum(p.numel() for p in model[2].parameters())
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
    model(torch.randn(B, D_IN)).sum().backward()
    optimizer.step()
    # params (all) + grads (trained) + exp_avg + exp_avg_sq (trained) + one step scalar per tensor
    assert model_state_bytes(model, optimizer) == 4 * (frozen + trained) + 4 * 3 * trained + 4 * 2
    assert model_state_bytes(model, None) == 4 * (frozen + trained) + 4 * trained


def test_fake_tensors_give_the_figures_of_real_ones():
    torch.manual_seed(0)
    model, x = two_layers(), torch.randn(B, D_IN)
    real = train_step_costs(model, lambda: model(x).sum())
    with FakeTensorMode():
        fake_model, fake_x = two_layers(), torch.randn(B, D_IN)
        fake = train_step_costs(fake_model, lambda: fake_model(fake_x).sum())
    assert fake == real
    forward = 2 * B * (D_IN * D_HID + D_HID * D_OUT)
    assert real == {"train_flops_per_step": 2 * forward + 2 * B * D_HID * D_OUT,
                    "peak_activation_bytes": 4 * (B * D_IN + B * D_HID)}
    assert all(p.grad is None for p in model.parameters())  # the probe leaves no gradient behind


class _Module(nn.Module):
    """The two calls measure_costs makes of a RecommenderModule: ``model`` and ``loss``."""

    def __init__(self, model, log_pop):
        super().__init__()
        self.model, self.log_pop = model, log_pop

    def loss(self, batch):
        return self.model.training_loss(batch["items"], self.log_pop, predict=batch["predict"])


def id_recommender(num_items=30, d=16):
    from recsys.adapters import TowerContext
    from recsys.models.recommender import SequentialRecommender

    tower = tower_class("id").from_context(TowerContext(None, num_items, d))
    return SequentialRecommender(tower, SASRec(d_model=d, num_blocks=1, num_heads=2, ffn_dim=32, max_len=6))


def test_measure_costs_on_the_id_tower():
    torch.manual_seed(0)
    model = id_recommender()
    module = _Module(model, torch.zeros(31))
    items = torch.randint(1, 31, (4, 7))
    train = {"items": items, "predict": torch.ones(4, 6, dtype=torch.bool)}
    evaluation = {"inputs": items[:, :6], "target": items[:, 6], "history": items[:, :6]}
    optimizer = torch.optim.Adam(model.parameters())
    module.loss(train).backward()
    optimizer.step()
    costs = measure_costs(module, train, evaluation, optimizer, latency_batch_sizes=(1, 8))
    assert costs["train_flops_per_step"] > 0 and costs["peak_activation_bytes"] > 0
    assert costs["train_flops_per_sequence"] == costs["train_flops_per_step"] / 4
    assert costs["item_flops_per_item"] == 0  # an embedding lookup multiplies nothing
    # a query scores every item: at least 2·d FLOPs per catalogue row
    assert costs["query_flops"] >= 2 * 16 * 31
    params = sum(p.numel() for p in model.parameters())
    assert costs["model_state_bytes"] == 4 * 4 * params + 4 * len(optimizer.state)
    assert costs["feature_bytes"] == feature_bytes(model) == 0
    assert costs["train_memory_bytes"] == costs["model_state_bytes"] + costs["peak_activation_bytes"]
    for size in (1, 8):
        assert 0 < costs[f"query_p50_ms_b{size}"] <= costs[f"query_p99_ms_b{size}"]


def test_query_latency_repeats_rows_to_the_batch_size():
    model = id_recommender().eval()
    calls = []
    encode = model.user_states
    model.user_states = lambda inputs, emb: calls.append(inputs.shape[0]) or encode(inputs, emb)
    batch = {"inputs": torch.randint(1, 31, (3, 6)), "history": torch.randint(1, 31, (3, 6))}
    p50, p99 = query_latency(model, batch, model.all_item_embeddings(), batch_size=7, repeats=4, warmup=2)
    assert calls == [7] * 6 and 0 < p50 <= p99


@pytest.mark.parametrize("residency", ["resident", "host"])
def test_feature_bytes_count_the_cached_tables(residency):
    from recsys.cache.features import FeatureStore

    table = torch.zeros(11, 3, 8, dtype=torch.float16)
    store = FeatureStore({"text": table}, {"text": [8, 8, 8]}, device_resident=residency == "resident")
    assert feature_bytes(nn.ModuleList([store])) == table.nbytes


def test_feature_bytes_count_an_int8_tables_scales():
    from recsys.cache.features import FeatureStore

    values, scales = torch.zeros(11, 3, 8, dtype=torch.int8), torch.ones(1, 3, 8)
    store = FeatureStore({"text": values}, {"text": [8, 8, 8]}, scales={"text": scales})
    assert feature_bytes(nn.ModuleList([store])) == values.nbytes + scales.nbytes
