"""Item towers whose foundation encoders run inside the training step (the baselines).

Pieces shared by ``iisan_uncached``, ``fft``, ``houlsby``, ``lora``, ``bitfit``, ``frozen``:

- ``LiveEncoders``: the ``source`` the framework hands towers that declare
  ``reads = "encoders"``: the encoder configs, the item records 1..N and the adapter's layer
  schedule; ``features(tuned, prepare)`` builds the encoders and the ``EncoderFeatures`` over
  the scheduled entries (``layer_schedule.select_entries``, as the cache loader).
- ``EncoderFeatures``: a ``FeatureStore``-like source (``modalities``, ``widths``,
  ``num_items``, ``gather(modality, ids [...]) -> [..., L, D_max]``) that COMPUTES the
  features of the requested items with the encoders instead of reading a cache: the item
  inputs are prepared once (``item_inputs.py``), each call runs ``encoder.encode`` (the
  cache builder's own code path: same layers, pooling, zero padding, zero invalid rows) in
  chunks of ``encoder.batch_size``. ``tuned=False``: frozen backbones, eval mode, no grad
  (so cached == uncached). ``tuned=True``: the same computation WITH gradients, and the
  backbones follow the tower's train/eval mode (dropout while training).
- ``BackboneTower``: the reference "standard" item embedding over any such source: per
  modality the last selected layer's feature (CLS or mean over real tokens, or global
  average pool, as the encoder config's ``pooling``) -> ``Linear(d, d_model)``; the
  modalities concatenated in IISAN's order [image, text] -> ``Linear(d_model·M, d_model)``.
- ``TunedBackboneTower``: the base of the in-loop baselines: a ``BackboneTower`` over
  ``EncoderFeatures(tuned=True)`` whose backbones its ``tune(model, **options)`` prepares (makes
  some parameters trainable, or injects modules); the options are ``tune``'s parameters.

Optimiser groups (``param_groups``): trainable encoder parameters -> ``adapter`` (1e-4; for
fft too: the encoder weights share the adapter rate), the text head -> ``text_head``, the
other heads and the fusion -> ``head``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from recsys.adapters import ItemTower, TowerContext, embed_unique, trainable
from recsys.adapters.iisan import REFERENCE_ORDER
from recsys.adapters.item_inputs import ItemInputs, build_item_inputs
from recsys.adapters.layer_schedule import Layers, select_entries
from recsys.cache.features import FeatureStore
from recsys.config.options import parameters_of

if TYPE_CHECKING:  # importing recsys.encoders loads transformers and timm (seconds)
    from recsys.encoders import FrozenEncoder


def build_encoders(configs: dict[str, dict[str, Any]]) -> dict[str, FrozenEncoder]:
    """modality -> encoder from ``encoder/<modality>/*.yaml`` mappings, keeping every
    hidden-state entry (the tower selects its layers itself)."""
    from recsys.encoders import build_encoder

    return {m: build_encoder({**cfg, "layers": None, "layer_groups": None}) for m, cfg in configs.items()}


def _encode_fn(encoder: FrozenEncoder, with_grad: bool) -> Callable[[dict], torch.Tensor]:
    """``encoder.encode`` (no grad), or the very same function without its ``torch.no_grad``
    decorator: identical layer selection, padding and masking, with gradients."""
    return partial(inspect.unwrap(type(encoder).encode), encoder) if with_grad else encoder.encode


class EncoderFeatures(nn.Module):
    """Per-layer features of items computed by the encoders (see module docstring).

    Args:
        encoders: modality -> encoder (built with every hidden-state entry).
        records: item records 1..N in item-id order (``items.parquet`` rows as dicts).
        layers: modality -> hidden-state entry indices to return, in order.
        tuned: False = frozen backbones (eval, no grad); True = trained with the tower.
    """

    def __init__(
        self,
        encoders: dict[str, FrozenEncoder],
        records: list[dict[str, Any]],
        layers: dict[str, list[int]],
        tuned: bool,
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.inputs = nn.ModuleDict({m: build_item_inputs(e, records) for m, e in encoders.items()})
        self.layers = {m: [int(i) for i in layers[m]] for m in encoders}
        self.widths = {m: [e.all_widths[i] for i in self.layers[m]] for m, e in encoders.items()}
        self.modalities = list(encoders)
        self.tuned = tuned
        self.train()  # new modules train; tuned backbones too (Lightning keeps modes as found)

    @property
    def num_items(self) -> int:
        """N, the number of real items (ids 1..N)."""
        inputs: ItemInputs = self.inputs[self.modalities[0]]
        return inputs.num_items

    def train(self, mode: bool = True) -> EncoderFeatures:
        """Frozen encoders stay in eval mode (FrozenEncoder); tuned backbones follow ``mode``."""
        super().train(mode)
        if self.tuned:
            for encoder in self.encoders.values():
                encoder.model.train(mode)
        return self

    def gather(self, modality: str, ids: torch.Tensor) -> torch.Tensor:
        """Features of items ``ids`` ([...] long) -> [..., L, max width] float32 on the
        encoder's device; row of id 0 (padding) or of an item without input = zeros."""
        encoder, inputs = self.encoders[modality], self.inputs[modality]
        encode = _encode_fn(encoder, with_grad=self.tuned)
        flat = ids.reshape(-1).to(inputs.valid.device)
        rows = [encode(inputs.batch(chunk)) for chunk in flat.split(encoder.batch_size)]
        feats = torch.cat(rows)[:, self.layers[modality], : max(self.widths[modality])]
        return feats.reshape(*ids.shape, *feats.shape[1:])


@dataclass(frozen=True)
class LiveEncoders:
    """Source of towers that run their encoders in the training step (``reads = "encoders"``).

    Attributes:
        configs: modality -> encoder config (an ``encoder/<modality>/*.yaml`` mapping).
        items: item records 1..N in item-id order.
        layers / layer_groups / last_only: the adapter's layer schedule
            (``layer_schedule.select_entries``).
    """

    configs: dict[str, dict[str, Any]]
    items: list[dict[str, Any]]
    layers: Layers = None
    layer_groups: int | None = None
    last_only: bool = False

    @property
    def modalities(self) -> list[str]:
        return list(self.configs)

    @property
    def num_items(self) -> int:
        return len(self.items)

    def features(self, tuned: bool, prepare: Callable[[nn.Module], None] | None = None) -> EncoderFeatures:
        """Build the encoders (``prepare(model)`` applied to each backbone first, e.g. LoRA
        injection) and the ``EncoderFeatures`` over the scheduled entries."""
        encoders = build_encoders(self.configs)
        if prepare is not None:
            for encoder in encoders.values():
                prepare(encoder.model)
        available = {m: list(range(len(e.all_widths))) for m, e in encoders.items()}
        entries = select_entries(available, self.layers, self.layer_groups, self.last_only)
        return EncoderFeatures(encoders, self.items, entries, tuned=tuned)


class BackboneTower(ItemTower):
    """Standard item embedding over the last selected layer of a feature source.

    Args:
        source: ``FeatureStore`` (cached features: the ``frozen`` linear probe) or
            ``EncoderFeatures`` (encoders in the loop).
        d_model: item embedding width (64).
    """

    layer_schedule = False  # the source holds each encoder's last entry only

    def __init__(self, source: FeatureStore | EncoderFeatures, d_model: int = 64) -> None:
        super().__init__()
        self.source = source
        self.d_model = d_model
        order = [m for m in REFERENCE_ORDER if m in source.modalities]
        order += [m for m in source.modalities if m not in order]
        self.heads = nn.ModuleDict({m: nn.Linear(source.widths[m][-1], d_model) for m in order})
        self.fusion = nn.Linear(d_model * len(self.heads), d_model)

    @property
    def num_items(self) -> int:
        return self.source.num_items

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Items ``ids`` [n] -> [n, d_model]."""
        dtype = self.fusion.weight.dtype
        outs = []
        for m, head in self.heads.items():
            last = self.source.gather(m, ids)[:, -1, : self.source.widths[m][-1]]
            outs.append(head(last.to(dtype)))
        return self.fusion(torch.cat(outs, dim=-1))

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Item embeddings, each distinct id embedded once: [...] long -> [..., d_model]."""
        return embed_unique(self.embed, item_ids)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        others = [h for m, h in self.heads.items() if m != "text"]
        return {
            "adapter": trainable(self.source.parameters()),
            "text_head": trainable(self.heads["text"].parameters()) if "text" in self.heads else [],
            "head": trainable(p for mod in (*others, self.fusion) for p in mod.parameters()),
        }


class TunedBackboneTower(BackboneTower):
    """Encoders in the training step, backbones prepared by ``tune`` (module docstring).

    Subclasses set ``tune = staticmethod(f)`` with ``f(model, **options)``: every backbone
    parameter starts frozen, ``f`` makes some trainable or injects trainable modules; its
    parameters after ``model`` are the adapter config's options.
    """

    reads = "encoders"

    @staticmethod
    def tune(model: nn.Module) -> None:
        raise NotImplementedError

    @classmethod
    def option_parameters(cls) -> list[inspect.Parameter]:
        return parameters_of(cls.tune, skip=1)  # after ``model``

    @classmethod
    def from_context(cls, context: TowerContext, **options: Any) -> TunedBackboneTower:
        features = context.source.features(tuned=True, prepare=lambda model: cls.tune(model, **options))
        return cls(features, d_model=context.d_model)
