"""Item towers: modules mapping item ids to d_model-dim item embeddings, and their registry.

Adding a method is one module and one config: a module in this package (or in any package
that declares it under the entry-point group ``recsys.adapters``, see ``recsys.registry``)
registering an ``ItemTower`` subclass, and ``conf/adapter/<name>.yaml`` naming it::

    @register_adapter("my_tower")
    class MyTower(ItemTower):
        reads = "cache"                       # what the framework hands it as ``source``
        def __init__(self, source: FeatureStore, width: int = 32, d_model: int = 64): ...

    # conf/adapter/my_tower.yaml
    name: my_tower
    modalities: [text, image]
    layer_groups: ${layer_schedule.groups}
    width: 32

A tower class declares what it reads (``reads``), and the framework builds that source:

- ``"cache"``: a ``FeatureStore`` over the cached hidden states of its modalities, holding the
  entries its layer schedule selects (``recsys.adapters.layer_schedule``);
- ``"encoders"``: ``LiveEncoders`` (``backbone.py``), the encoder configs and item records,
  from which the tower builds encoders that run inside the training step;
- ``None``: nothing but item ids.

``layer_schedule = True`` gives the adapter config the framework keys ``layers`` /
``layer_groups`` (which hidden-state entries the source holds); ``False`` gives the source
each encoder's last entry only. The tower's options are its constructor's parameters except
the context ones (``option_parameters``): they are typed by their annotations and checked when
the config is composed (``recsys.config``), before any work starts. ``from_context`` builds the
tower from a ``TowerContext`` (source, N, d_model) and its options.

Towers with a learned fusion router (CROSSAN's MoMEF) also report an auxiliary training
loss (``aux_loss()``, added by ``SequentialRecommender.training_loss``), their gate
weights (``gate_summary()``, logged by the training module) and which modality each gate
expert reads (``gate_modalities()``, for gate pruning); the defaults here are no-ops.

Towers reading the cache get modality dropout and subset evaluation for free: both zero
rows in ``FeatureStore.gather`` (``recsys.adapters.modality_mask``), and an all-zero row is
how the data marks an item without the modality.

``embed_unique(embed, item_ids)`` runs a tower's per-item computation once per distinct id of
a batch (a training batch repeats popular items many times) and scatters the rows back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from recsys.registry import Registry

PARAM_GROUPS = ("adapter", "text_head", "head")
#: Constructor parameters the framework fills from the ``TowerContext``; never options.
CONTEXT_PARAMETERS = ("source", "num_items", "d_model")
#: Keys of every adapter config that the framework consumes itself (``modality_dropout``:
#: ``recsys.adapters.modality_mask``; its default, 0, is conf/train.yaml's, for every adapter).
FRAMEWORK_KEYS = ("name", "modalities", "modality_dropout")
SCHEDULE_KEYS = ("layers", "layer_groups")

Reads = Literal["cache", "encoders"] | None


@dataclass(frozen=True)
class TowerContext:
    """What the framework hands a tower besides its options.

    Attributes:
        source: what the tower class ``reads``: a ``FeatureStore``, ``LiveEncoders`` or None.
        num_items: N, the number of real items (ids 1..N, 0 = padding).
        d_model: the item embedding width, the user encoder's (``model.d_model``).
    """

    source: Any
    num_items: int
    d_model: int


class ItemTower(nn.Module):
    """Base class of item towers.

    Subclasses set ``d_model`` and implement ``forward(item_ids [...]) -> [..., d_model]``,
    the ``num_items`` property (N; ids 1..N are real, 0 is padding) and ``param_groups()``;
    they declare ``reads`` and ``layer_schedule`` (module docstring).
    """

    d_model: int
    reads: ClassVar[Reads] = "cache"
    layer_schedule: ClassVar[bool] = True

    @classmethod
    def from_context(cls, context: TowerContext, **options: Any) -> ItemTower:
        """Build the tower from the framework's context and its (checked) options."""
        return cls(context.source, d_model=context.d_model, **options)

    @classmethod
    def option_parameters(cls) -> list:
        """The tower's options: its constructor's parameters minus ``CONTEXT_PARAMETERS``."""
        from recsys.config.options import parameters_of

        return [p for p in parameters_of(cls.__init__, skip=1) if p.name not in CONTEXT_PARAMETERS]

    @classmethod
    def check_options(cls, modalities: list[str], options: dict[str, Any]) -> None:
        """Raise ValueError for options this tower cannot serve with ``modalities`` (the
        modalities of its config that have an encoder); called when the config is checked."""

    @property
    def num_items(self) -> int:
        raise NotImplementedError

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by optimiser group: keys ``adapter`` (lr key ``adapter``),
        ``text_head`` (``text_head``), ``head`` (``other``); each parameter exactly once."""
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

    def gate_modalities(self) -> dict[str, str]:
        """Gate expert (a key of ``gate_summary``) -> the modality it reads; {} when the tower
        has no gates (the default). Gate pruning (``prune.gate_threshold``) reads a modality's
        weight as the sum of its experts'."""
        return {}


TOWERS: Registry[type[ItemTower]] = Registry("adapter", package=__name__, group="recsys.adapters")


def register_adapter(name: str) -> Callable[[type[ItemTower]], type[ItemTower]]:
    """Class decorator registering an ``ItemTower`` subclass under ``name``."""
    return TOWERS.register(name)


def tower_class(name: str) -> type[ItemTower]:
    """The tower class registered as ``name`` (KeyError listing the registered ones)."""
    return TOWERS.get(name)


def list_adapters() -> list[str]:
    """Registered tower names, sorted."""
    return TOWERS.names()


def build_item_tower(
    name: str, source: Any = None, *, num_items: int | None = None, d_model: int = 64, **options: Any
) -> ItemTower:
    """Build the tower registered as ``name`` over ``source`` (see ``TowerContext``); N is
    ``source.num_items`` unless given. ``options`` are checked against the tower's typed
    options first, as a config would be (ValueError naming each bad one)."""
    from recsys.config.options import options_model, problems

    cls = tower_class(name)
    if bad := problems(options_model(f"adapter {name}", cls.option_parameters()), options, "adapter"):
        raise ValueError("; ".join(bad))
    if num_items is None:
        if source is None:
            raise ValueError(f"adapter {name!r}: pass num_items (no source to read it from)")
        num_items = source.num_items
    return cls.from_context(TowerContext(source, int(num_items), int(d_model)), **options)


def embed_unique(embed: Callable[[torch.Tensor], torch.Tensor], item_ids: torch.Tensor) -> torch.Tensor:
    """``embed`` (ids [n] -> [n, d]) applied once per distinct id: [...] -> [..., d].

    Scattered back with ``index_select``: its backward (``index_add``) sums repeated rows in a
    fixed order on CPU, while ``out[inverse]``'s (``index_put`` with accumulation) does not, and
    makes two runs of one seed drift apart."""
    uniq, inverse = torch.unique(item_ids.reshape(-1), return_inverse=True)
    out = embed(uniq).index_select(0, inverse)
    return out.reshape(*item_ids.shape, out.shape[-1])


def trainable(params) -> list[nn.Parameter]:
    """The parameters of an iterable that require grad, in order."""
    return [p for p in params if p.requires_grad]


def check_groups(module: nn.Module, groups: dict[str, list[torch.Tensor]]) -> None:
    """Raise if ``groups`` does not hold every trainable parameter of ``module`` exactly once."""
    ids = [id(p) for ps in groups.values() for p in ps]
    want = {id(p) for p in module.parameters() if p.requires_grad}
    if len(ids) != len(set(ids)) or set(ids) != want:
        raise RuntimeError("parameter groups must cover every trainable parameter exactly once")
