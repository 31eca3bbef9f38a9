"""Test passes with some modalities absent, after training: per subset and after gate pruning.

Both run at the best checkpoint, after the run's normal test, through a ``TestPass`` (the
trainer's test pass with the other modalities absent for every item,
``recsys.adapters.modality_mask.evaluating_with``):

- ``eval.modality_subsets`` (e.g. [[text, image], [text], [image]]): one test per subset ->
  results.json ``metrics.test_by_modalities``: subset name (``subset_name``: "image+text",
  "text", "image") -> its test metrics.
- ``prune.gate_threshold`` t, for towers with fusion gates (``ItemTower.gate_modalities``):
  a modality's gate weight is the mean gate weight over the validation pass at the best
  checkpoint (results.json ``metrics.val["gate/<expert>"]``) of the experts reading it,
  summed (CROSSAN's MoMEF: one expert per modality, so its own weight). Every modality whose
  weight is below t is pruned, never all of them: when every one is below t, the heaviest
  stays. The run is tested without the pruned ones and the cost they saved is counted:
  item FLOPs per item (``recsys.train.cost.item_flops_per_item``) with every modality and
  with the pruned ones absent, which the tower then does not compute (CROSSAN skips their
  streams, messages and expert heads; the router still reads all E expert slots), and the
  bytes of the pruned modalities' cached features (``feature_bytes``), which need no longer
  be stored or loaded. results.json ``pruning``::

    {"threshold": t, "gate_weights": {modality: weight}, "pruned": [...], "kept": [...],
     "test": {...} (without the pruned modalities; the normal test when none is pruned),
     "cost_saved": {"item_flops_per_item": {"all", "pruned", "saved", "saved_fraction"},
                    "feature_bytes": {"all", "pruned", "saved", "saved_fraction"}}}

  ("all": with every modality; "pruned": after pruning; "saved" = all - pruned.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from recsys.adapters import ItemTower
from recsys.adapters.modality_mask import evaluating_with, subset_name
from recsys.train.cost import feature_bytes, item_flops_per_item

#: Test metrics at the best checkpoint with only these modalities (None: all).
TestPass = Callable[[Sequence[str] | None], dict[str, float]]


def metrics_by_modalities(
    test: TestPass, subsets: Sequence[Sequence[str]] | None
) -> dict[str, dict[str, float]] | None:
    """Subset name -> its test metrics, per subset; None without subsets."""
    return {subset_name(s): test(list(s)) for s in subsets} if subsets else None


def check_prunable(tower: ItemTower) -> None:
    """Raise ValueError before training when the tower has no gates to prune by."""
    if not tower.gate_modalities():
        raise ValueError(f"prune.gate_threshold: {type(tower).__name__} has no fusion gates to prune "
                         "modalities by; use adapter=crossan (fusion=momef) or prune.gate_threshold=null")


def modality_gate_weights(gates: Mapping[str, float], experts: Mapping[str, str]) -> dict[str, float]:
    """Gate weight per modality, the sum of its experts' (``gates``: expert -> mean weight,
    ``experts``: expert -> the modality it reads), in ``experts`` order."""
    weights: dict[str, float] = {}
    for expert, modality in experts.items():
        if expert not in gates:
            raise ValueError(f"no gate weight of expert {expert!r} in the validation metrics {sorted(gates)}")
        weights[modality] = weights.get(modality, 0.0) + float(gates[expert])
    return weights


def choose_pruned(weights: Mapping[str, float], threshold: float) -> list[str]:
    """The modalities whose weight is below ``threshold``, in ``weights`` order; never all of
    them (the heaviest stays)."""
    pruned = [m for m, w in weights.items() if w < threshold]
    if len(pruned) == len(weights):
        pruned.remove(max(weights, key=weights.__getitem__))
    return pruned


def _saving(before: float, after: float) -> dict[str, float]:
    saved = before - after
    fraction = saved / before if before else 0.0
    return {"all": before, "pruned": after, "saved": saved, "saved_fraction": fraction}


def pruning_cost(module: nn.Module, kept: Sequence[str], pruned: Sequence[str]) -> dict[str, dict]:
    """Item FLOPs per item with every modality and with only ``kept`` (eval mode), and the
    feature bytes without ``pruned``'s tables; ``module``: a ``RecommenderModule``."""
    was_training = module.training
    module.eval()
    every = item_flops_per_item(module.model)
    with evaluating_with(module, kept):
        after = item_flops_per_item(module.model)
    module.train(was_training)
    stored = feature_bytes(module)
    return {"item_flops_per_item": _saving(every, after),
            "feature_bytes": _saving(stored, stored - feature_bytes(module, list(pruned)))}


def prune_by_gates(
    module: nn.Module, metrics: Mapping[str, Any], threshold: float | None, test: TestPass
) -> dict[str, Any] | None:
    """Gate pruning of ``module``'s modalities (module docstring) from the run's ``metrics``
    (``{"val": {...}, "test": {...}}``); None when ``threshold`` is None."""
    if threshold is None:
        return None
    experts = module.model.item_tower.gate_modalities()
    gates = {k.removeprefix("gate/"): v for k, v in metrics["val"].items() if k.startswith("gate/")}
    weights = modality_gate_weights(gates, experts)
    pruned = choose_pruned(weights, threshold)
    kept = [m for m in weights if m not in pruned]
    return {
        "threshold": threshold,
        "gate_weights": weights,
        "pruned": pruned,
        "kept": kept,
        "test": test(kept) if pruned else dict(metrics["test"]),
        "cost_saved": pruning_cost(module, kept, pruned),
    }
