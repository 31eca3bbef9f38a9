"""Item towers: modules mapping item ids to d_model-dim item embeddings.

A tower is an ``ItemTower`` (``forward(item_ids [...]) -> [..., d_model]``) registered under a
name; multimodal towers read cached frozen-encoder features through a ``FeatureStore`` they
own as a submodule (its buffers move with the tower).

    tower = build_item_tower("iisan", store, streams="intra_inter", fusion="gated")

``build_item_tower(name, store, **cfg)`` takes the adapter config minus its ``name`` key
(``conf/adapter/*.yaml``; every tower accepts ``layers``, which towers over features check
against the store with ``check_store_layers``). ``layers_per_modality(cfg["layers"],
modalities)`` turns the config's layer schedule into the ``layers`` argument of
``load_feature_store``.

Towers with a learned fusion router (CROSSAN's MoMEF) also report an auxiliary training
loss (``aux_loss()``, added by ``SequentialRecommender.training_loss``) and their gate
weights (``gate_summary()``, logged by the training module); the defaults here are no-ops.

``embed_unique(embed, item_ids)`` runs a tower's per-item computation once per distinct id of
a batch (a training batch repeats popular items many times) and scatters the rows back.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from recsys.cache.features import FeatureStore

PARAM_GROUPS = ("adapter", "text_head", "head")


class ItemTower(nn.Module):
    """Base class of item towers.

    Subclasses set ``d_model`` and implement ``forward(item_ids [...]) -> [..., d_model]``,
    the ``num_items`` property (N; ids 1..N are real, 0 is padding) and ``param_groups()``.
    """

    d_model: int

    @property
    def num_items(self) -> int:
        raise NotImplementedError

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimiser group: keys ``adapter`` (side blocks, gates,
        alignment), ``text_head``, ``head`` (everything else); each parameter exactly once."""
        raise NotImplementedError

    def num_trainable(self) -> int:
        """Number of trainable scalars."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def aux_loss(self) -> torch.Tensor | None:
        """Auxiliary loss of the last forward (a scalar, already weighted), added to the
        training loss; None when the tower has none (the default)."""
        return None

    def gate_summary(self, reset: bool = True) -> dict[str, float]:
        """Mean fusion gate weight per expert over the items embedded since the last reset
        (``reset=True`` starts a new window); {} when the tower has no gates (the default)."""
        return {}


def embed_unique(embed: Callable[[torch.Tensor], torch.Tensor], item_ids: torch.Tensor) -> torch.Tensor:
    """``embed`` (ids [n] -> [n, d]) applied once per distinct id: [...] -> [..., d].

    Scattered back with ``index_select``: its backward (``index_add``) sums repeated rows in a
    fixed order on CPU, while ``out[inverse]``'s (``index_put`` with accumulation) does not, and
    makes two runs of one seed drift apart."""
    uniq, inverse = torch.unique(item_ids.reshape(-1), return_inverse=True)
    out = embed(uniq).index_select(0, inverse)
    return out.reshape(*item_ids.shape, out.shape[-1])


_REGISTRY: dict[str, Callable[..., ItemTower]] = {}


def register_adapter(name: str) -> Callable:
    """Class decorator registering an item tower under ``name``."""

    def wrap(cls: Callable[..., ItemTower]) -> Callable[..., ItemTower]:
        if name in _REGISTRY:
            raise ValueError(f"adapter {name!r} registered twice")
        _REGISTRY[name] = cls
        return cls

    return wrap


def build_item_tower(name: str, store: FeatureStore | None, **cfg) -> ItemTower:
    """Instantiate the tower registered as ``name`` with ``store`` and config ``cfg``."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown adapter {name!r}; available: {list_adapters()}")
    return _REGISTRY[name](store, **cfg)


def list_adapters() -> list[str]:
    """Registered tower names, sorted."""
    return sorted(_REGISTRY)


def layers_per_modality(
    layers: list[int] | dict[str, list[int]] | None, modalities: list[str]
) -> dict[str, list[int]] | None:
    """Layer schedule for each modality: a list applies to every modality, a dict is per
    modality (IISAN-Versa asymmetric encoders). None stays None (use the cache's layers)."""
    if layers is None:
        return None
    if isinstance(layers, dict) or hasattr(layers, "keys"):
        missing = [m for m in modalities if m not in layers]
        if missing:
            raise ValueError(f"adapter.layers has no schedule for modalities {missing}")
        return {m: [int(i) for i in layers[m]] for m in modalities}
    return {m: [int(i) for i in layers] for m in modalities}


def check_store_layers(
    store: FeatureStore, layers: list[int] | dict | None, modalities: list[str] | None = None
) -> None:
    """Raise a ValueError if the schedule ``layers`` (a list for every modality, a dict per
    modality, None = no check) selects another number of entries than ``store`` holds, for
    each of ``modalities`` (default: all of the store's)."""
    mods = list(modalities or store.modalities)
    for m, sched in (layers_per_modality(layers, mods) or {}).items():
        if len(sched) != len(store.widths[m]):
            raise ValueError(
                f"adapter.layers selects {len(sched)} {m} layers {sched} but the feature "
                f"store holds {len(store.widths[m])}: load the cache with the adapter's layers"
            )


def trainable(params) -> list[nn.Parameter]:
    """The parameters of an iterable that require grad, in order."""
    return [p for p in params if p.requires_grad]


def check_groups(module: nn.Module, groups: dict[str, list[torch.Tensor]]) -> None:
    """Raise if ``groups`` does not hold every trainable parameter of ``module`` exactly once."""
    ids = [id(p) for ps in groups.values() for p in ps]
    want = {id(p) for p in module.parameters() if p.requires_grad}
    if len(ids) != len(set(ids)) or set(ids) != want:
        raise RuntimeError("parameter groups must cover every trainable parameter exactly once")


from recsys.adapters import (  # noqa: E402,F401  (registers the towers)
    bitfit,
    crossan,
    fft,
    frozen,
    houlsby,
    id_embedding,
    iisan,
    iisan_uncached,
    lora,
)
