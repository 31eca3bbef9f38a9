"""Work and memory counted, not timed: efficiency figures that mean the same on any machine.

Wall time and peak RSS depend on the machine and on what else it runs (on a CPU the
libraries dominate the RSS). What a method *does* does not: this module counts it over real
steps of the model, so a CPU run can be compared with a GPU run or with a paper.

FLOPs (``torch.utils.flop_counter.FlopCounterMode``: matrix products, convolutions and
attention, forward and backward; element-wise work is not counted):
- ``train_flops_per_step``: one training step (loss forward + backward) on one train batch;
  ``train_flops_per_sequence`` = that / the batch's sequences;
- ``item_flops_per_item``: the item tower embedding items (no gradients), per item;
- ``query_flops``: one user query, per user: the user encoder over the history's item vectors
  (looked up in the catalogue's embeddings, as a server does) plus exact full ranking (scores
  against the whole catalogue).

Memory (bytes; each storage counted once, so views and shared weights are not counted twice):
- ``model_state_bytes``: parameters (trainable and frozen) + gradients of the trainable ones
  + the optimiser's state tensors (Adam: two moments);
- ``peak_activation_bytes``: the tensors autograd saves for backward during one training
  step's forward (``torch.autograd.graph.saved_tensors_hooks``), parameters, buffers and
  features excluded; they are all alive when backward starts, so their sum is the step's peak;
- ``feature_bytes``: what the item tower keeps resident to read items from (the cached hidden
  states, or the encoders' preprocessed inputs for towers that run them);
- ``train_memory_bytes``: the sum of the three.

Every counter runs under ``FakeTensorMode`` too (tensors with shapes but no data), which gives
the same figures for settings that do not fit the machine (experiments/count_costs_at_scale.py).

Inference latency (measured, after warm-up; ``query_latency``): user encoder + exact top-10 over
the catalogue, p50 / p99 in ms, at batch 1 and 256 (``query_p50_ms_b1``, ``query_p99_ms_b256``, ...).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_backward_flop

from recsys.eval.ranking import chunked_topk, full_ranking_ranks
from recsys.train.results import LATENCY_BATCH_SIZES


def _storage_key(tensor: torch.Tensor) -> int:
    """One key per storage (views share it); works for real, meta and fake tensors, whose
    ``data_ptr`` is not a usable identity."""
    return tensor.untyped_storage()._cdata


def _storages(tensors: Iterator[torch.Tensor]) -> dict[int, int]:
    """storage key -> bytes of that storage."""
    return {_storage_key(t): t.untyped_storage().nbytes() for t in tensors}


def grouped_conv_backward_flop(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation,
                               transposed, output_padding, groups, output_mask, out_shape, **kwargs) -> int:
    """FLOPs of ``aten.convolution_backward``, torch's formula with its weight-gradient term
    divided by ``groups``. torch 2.14 counts that term as one dense convolution over all input
    channels, ``groups`` times the work a grouped convolution does: 32x to 1152x too much for
    each depthwise convolution of an EfficientNet (its input-gradient term is right). The fix
    proposed upstream (pytorch/pytorch#183405) divides by ``groups`` the same way; a test
    checks the result against the grouped convolution split into ``groups`` dense ones."""
    args = (grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed, output_padding,
            groups)
    grad_input = conv_backward_flop(*args, [output_mask[0], False, False], out_val=out_shape)
    grad_weight = conv_backward_flop(*args, [False, output_mask[1], False], out_val=out_shape)
    return grad_input + grad_weight // groups


#: Formulas replacing torch's in every count (``FlopCounterMode(custom_mapping=...)``).
FLOP_FORMULAS = {torch.ops.aten.convolution_backward: grouped_conv_backward_flop}


def count_flops(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(``fn()``, the FLOPs it ran: 2 per multiply-add of every matmul/conv/attention; grouped
    convolutions' backward by ``grouped_conv_backward_flop``)."""
    with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
        out = fn()
    return out, int(counter.get_total_flops())


@contextmanager
def saved_tensor_bytes(exclude: dict[int, int] | None = None) -> Iterator[dict[int, int]]:
    """Within the block, records every storage autograd saves for backward: yields the dict
    storage key -> bytes it fills (``sum(d.values())`` = the saved bytes). Storages in
    ``exclude`` (keys of ``_storages``: parameters, buffers) are not recorded."""
    skip = exclude or {}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = _storage_key(tensor)
        if key not in skip:
            saved[key] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield saved


def _unique_params(module: nn.Module) -> list[nn.Parameter]:
    return list({id(p): p for p in module.parameters()}.values())


def model_state_bytes(module: nn.Module, optimizer: torch.optim.Optimizer | None) -> int:
    """Parameters + gradients of the trainable ones + the optimiser's state tensors, bytes.

    The gradients are counted at the parameters' size (what backward allocates), whether or
    not ``.grad`` is set now; the optimiser's state as it holds it (after at least one step).
    """
    params = _unique_params(module)
    total = sum(_storages(iter(params)).values())
    total += sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    if optimizer is not None:
        state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
        total += sum(_storages(iter(state)).values())
    return int(total)


def feature_bytes(module: nn.Module, modalities: list[str] | None = None) -> int:
    """Bytes of what the item tower reads items from: every ``FeatureStore`` table (resident
    or host; int8 ones with their scales) and every ``ItemInputs`` buffer under ``module``;
    with ``modalities``, only the ``FeatureStore`` tables of those."""
    from recsys.adapters.item_inputs import ItemInputs
    from recsys.cache.features import FeatureStore

    tensors: list[torch.Tensor] = []
    for sub in module.modules():
        if isinstance(sub, FeatureStore):
            tensors += _feature_tables(sub, modalities)
        elif isinstance(sub, ItemInputs) and modalities is None:
            tensors += list(sub.buffers())
    return int(sum(_storages(iter(tensors)).values()))


def _held_storages(module: nn.Module) -> dict[int, int]:
    """Storages the module holds anyway (parameters, buffers, host feature tables): not
    activations when autograd saves them."""
    from recsys.cache.features import FeatureStore

    held = list(module.parameters()) + list(module.buffers())
    for sub in module.modules():
        if isinstance(sub, FeatureStore):
            held += _feature_tables(sub)
    return _storages(iter(held))


def _feature_tables(store: nn.Module, modalities: list[str] | None = None) -> list[torch.Tensor]:
    """A ``FeatureStore``'s tables (of ``modalities``; None: all), and the scales of its int8 ones."""
    mods = [m for m in store.modalities if modalities is None or m in modalities]
    scales = [store.scales(m) for m in mods]
    return [store.table(m) for m in mods] + [s for s in scales if s is not None]


def train_step_costs(module: nn.Module, loss_fn: Callable[[], torch.Tensor]) -> dict[str, int]:
    """FLOPs of ``loss_fn()`` + its backward and the bytes saved for that backward.

    ``module`` owns every parameter the loss reaches (their ``.grad`` are cleared after).
    Returns ``{"train_flops_per_step", "peak_activation_bytes"}``.
    """
    held = _held_storages(module)

    def step() -> int:
        with saved_tensor_bytes(exclude=held) as saved:
            loss = loss_fn()
        loss.backward()
        return sum(saved.values())

    activation, flops = count_flops(step)
    module.zero_grad(set_to_none=True)
    return {"train_flops_per_step": flops, "peak_activation_bytes": int(activation)}


@torch.no_grad()
def item_flops_per_item(model: nn.Module, num: int = 256) -> float:
    """FLOPs of the item tower per item, over items ``1..num`` (0 for an embedding table).
    ``model``: a ``SequentialRecommender``."""
    device = next(model.parameters()).device
    ids = torch.arange(1, min(num, model.num_items) + 1, device=device)
    _, flops = count_flops(lambda: model.item_embeddings(ids))
    return flops / ids.numel()


def user_query(model: nn.Module, inputs: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
    """The user vectors of a query as a server answers it: the history's embeddings looked up
    in the catalogue table ``item_emb`` [N+1, d] (never re-embedded), then the user encoder.
    ``inputs`` [B, W] -> [B, d]."""
    return model.user_states(inputs, item_emb[inputs])[:, -1]


@torch.no_grad()
def query_flops(model: nn.Module, batch: dict[str, torch.Tensor], item_emb: torch.Tensor) -> float:
    """FLOPs per user of one query: the user encoder over ``batch["inputs"]`` [B, W] + scoring
    the catalogue ``item_emb`` [N+1, d] (exact full ranking, as evaluation runs it)."""

    def query() -> None:
        full_ranking_ranks(user_query(model, batch["inputs"], item_emb), item_emb, batch["target"],
                           batch["history"])

    _, flops = count_flops(query)
    return flops / batch["inputs"].shape[0]


def _tiled(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """The first ``rows`` rows of ``tensor`` repeated as often as needed: [rows, ...]."""
    reps = -(-rows // tensor.shape[0])
    return tensor.repeat(reps, *([1] * (tensor.dim() - 1)))[:rows]


@torch.no_grad()
def query_latency(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    item_emb: torch.Tensor,
    batch_size: int,
    repeats: int = 50,
    warmup: int = 5,
    k: int = 10,
) -> tuple[float, float]:
    """Latency of answering ``batch_size`` users at once: ``user_query`` + exact top-``k`` over
    the catalogue ``item_emb`` [N+1, d], history excluded (the serving path). The batch's rows
    are repeated to ``batch_size``; the device is synchronised around each query. Returns
    (p50, p99) in ms over ``repeats`` timed queries after ``warmup`` untimed ones."""
    inputs, history = _tiled(batch["inputs"], batch_size), _tiled(batch["history"], batch_size)
    sync = torch.cuda.synchronize if item_emb.device.type == "cuda" else (lambda: None)
    times = []
    for i in range(warmup + repeats):
        sync()
        start = time.perf_counter()
        chunked_topk(user_query(model, inputs, item_emb), item_emb, k, excluded=history)
        sync()
        if i >= warmup:
            times.append(1e3 * (time.perf_counter() - start))
    percentiles = statistics.quantiles(times, n=100, method="inclusive")
    return statistics.median(times), percentiles[98]


def measure_costs(
    module: nn.Module,
    train_batch: dict[str, torch.Tensor],
    eval_batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
    step_context: Callable[[], Any] | None = None,
    latency_batch_sizes: tuple[int, ...] = LATENCY_BATCH_SIZES,
) -> dict[str, float | int]:
    """Every counted figure of the module docstring, plus query latency p50 / p99 per batch
    size (``query_p50_ms_b1``, ...), for a ``RecommenderModule`` on its device.

    Args:
        train_batch / eval_batch: a train batch ({"items", "predict"}) and an evaluation batch
            ({"inputs", "target", "history"}), moved to the module's device here.
        optimizer: the run's optimiser, after its steps (its state is counted).
        step_context: the precision context training steps run in (Lightning's
            ``precision_plugin.train_step_context``), so activations have the training dtype.
    Runs one extra training step's forward and backward (gradients cleared after, no
    optimiser step): call it when training is over.
    """
    device = next(module.parameters()).device
    train_batch = {k: v.to(device) for k, v in train_batch.items()}
    eval_batch = {k: v.to(device) for k, v in eval_batch.items()}
    model, was_training = module.model, module.training
    module.train()
    with step_context() if step_context else nullcontext():
        step = train_step_costs(module, lambda: module.loss(train_batch))
    module.eval()
    with torch.no_grad():
        item_emb = model.all_item_embeddings(chunk_size=getattr(module, "chunk_size", None))
    state, features = model_state_bytes(module, optimizer), feature_bytes(module)
    figures: dict[str, float | int] = {
        **step,
        "train_flops_per_sequence": step["train_flops_per_step"] / train_batch["items"].shape[0],
        "item_flops_per_item": item_flops_per_item(model),
        "query_flops": query_flops(model, eval_batch, item_emb),
        "model_state_bytes": state,
        "feature_bytes": features,
        "train_memory_bytes": state + step["peak_activation_bytes"] + features,
    }
    for size in latency_batch_sizes:
        p50, p99 = query_latency(model, eval_batch, item_emb, size)
        figures |= {f"query_p50_ms_b{size}": p50, f"query_p99_ms_b{size}": p99}
    module.train(was_training)
    return figures
