"""Modality dropout and subset evaluation: which modality rows of cached features are zeroed.

An item lacking a modality is represented as the data already represents it: an all-zero
feature row (``present``), which every cached tower handles (CROSSAN and MoMEF mask it out,
IISAN's streams read zeros). Both knobs therefore act at the source, in
``FeatureStore.gather``, for every tower that reads the cache, with one ``ModalityMask`` per
store (its child module, so it follows the tower's train / eval mode):

- ``dropout`` p (``adapter.modality_dropout``), training mode only: each training batch
  (``resample_dropout``, called by the training module before every batch) draws, for every
  item of the catalogue, which of its present modalities it loses for that batch, each
  independently with probability p; every occurrence of an item in the batch (and every
  distinct item ``embed_unique`` embeds) loses the same ones. An item whose present
  modalities would all be dropped keeps one of them, chosen uniformly (``draw_kept``), so for
  an item with all M modalities P(a modality dropped) = p - p^M / M (p = 0.3, M = 2: 0.255).
  The draw uses torch's global generator on the store's device (seeded by the run:
  reproducible), 2·(N+1)·M uniforms per batch; p = 0 draws nothing (exactly the behaviour
  without dropout).
- ``eval_modalities`` (``eval.modalities``, ``eval.modality_subsets``, pruning), eval mode
  only: the modalities outside it read as absent for every item; None = all of them.
  ``skipped()`` names them, so a tower may skip their computation (CROSSAN does).

Presence [N+1, M] is read off the whole table once, the first time a dropout is drawn.
IISAN and frozen still run a stream over a zero row (their output for it is a learned
constant); CROSSAN skips what ``skipped()`` names, and masks zero rows out of its fusion.

The config checks of these knobs, and of gate pruning's (``prune.gate_threshold``), are
``knob_problems``, run when the config is composed (``recsys.config.schema``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def present(features: torch.Tensor) -> torch.Tensor:
    """Whether each item has the modality: gathered features [n, L, D_max] -> [n] bool
    (False for an all-zero row: a missing modality or the padding id)."""
    return features.abs().amax(dim=(-2, -1)) > 0


def subset_name(modalities: Iterable[str]) -> str:
    """A modality subset's name in results.json and reports: sorted, "+"-joined
    (``[text, image]`` -> ``"image+text"``)."""
    return "+".join(sorted(modalities))


def draw_kept(present: torch.Tensor, p: float) -> torch.Tensor:
    """Modality dropout of items with modalities ``present`` [n, M] bool -> kept [n, M] bool.

    Each present modality is dropped independently with probability ``p``; an item whose
    present modalities are all dropped gets one of them back, chosen uniformly. Absent
    modalities are never kept. Draws 2·n·M uniforms from torch's global generator on
    ``present``'s device, whatever ``p`` (callers skip the call at p = 0)."""
    drop = (torch.rand(present.shape, device=present.device) < p) & present
    lost = present.any(-1) & (drop == present).all(-1)  # [n]: every present modality dropped
    choice = torch.rand(present.shape, device=present.device).masked_fill(~present, -1.0).argmax(-1)
    restored = nn.functional.one_hot(choice, present.shape[-1]).bool() & lost.unsqueeze(-1)
    return present & (~drop | restored)


class ModalityMask(nn.Module):
    """Zeroes a store's rows of dropped or excluded modalities (see module docstring).

    Args:
        modalities: the store's modalities, in its order (the M columns of presence).
        presence: returns [N+1, M] bool, whether each item has each modality (read lazily).
    """

    def __init__(self, modalities: Sequence[str], presence: Callable[[], torch.Tensor]) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self._presence = presence
        self._present: torch.Tensor | None = None  # [N+1, M] bool, once read
        self._kept: torch.Tensor | None = None  # [N+1, M] bool, this batch's draw
        self.dropout = 0.0
        self.eval_modalities: tuple[str, ...] | None = None

    def set_dropout(self, p: float) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"modality dropout must be in [0, 1), got {p}")
        self.dropout = float(p)
        self._kept = None

    def set_eval_modalities(self, modalities: Sequence[str] | None) -> None:
        """Evaluate with ``modalities`` only (None: all)."""
        if modalities is not None:
            unknown = sorted(set(modalities) - set(self.modalities))
            if unknown or not modalities:
                raise ValueError(f"eval modalities must be a non-empty subset of {self.modalities}, "
                                 f"got {list(modalities)}")
            modalities = tuple(m for m in self.modalities if m in modalities)
        self.eval_modalities = modalities

    def resample(self) -> None:
        """Draw the next training batch's dropout (nothing, and no random number, at p = 0)."""
        if self.dropout == 0.0:
            return
        if self._present is None:
            self._present = self._presence()
        self._kept = draw_kept(self._present, self.dropout)

    def skipped(self) -> list[str]:
        """The modalities absent for every item in the current mode (eval: those outside
        ``eval_modalities``; training: none)."""
        if self.training or self.eval_modalities is None:
            return []
        return [m for m in self.modalities if m not in self.eval_modalities]

    def forward(self, modality: str, ids: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Rows of ``modality`` for items ``ids`` [...] -> the rows [..., L, D] with those of
        absent ones zeroed."""
        if modality in self.skipped():
            return torch.zeros_like(rows)
        if not self.training or self._kept is None:
            return rows
        column = self._kept[:, self.modalities.index(modality)].to(rows.device)
        keep = column[ids.to(rows.device)]
        return rows.masked_fill(~keep[..., None, None], 0)


def modality_masks(module: nn.Module) -> list[ModalityMask]:
    """Every ``ModalityMask`` under ``module`` (one per ``FeatureStore``)."""
    return [m for m in module.modules() if isinstance(m, ModalityMask)]


def set_modality_dropout(module: nn.Module, p: float) -> None:
    """Modality dropout ``p`` for every store under ``module``."""
    for mask in modality_masks(module):
        mask.set_dropout(p)


def resample_dropout(module: nn.Module) -> None:
    """Draw the next training batch's modality dropout of every store under ``module``."""
    for mask in modality_masks(module):
        mask.resample()


def set_eval_modalities(module: nn.Module, modalities: Sequence[str] | None) -> None:
    """Evaluate every store under ``module`` with ``modalities`` only (None: all)."""
    for mask in modality_masks(module):
        mask.set_eval_modalities(modalities)


@contextmanager
def evaluating_with(module: nn.Module, modalities: Sequence[str] | None) -> Iterator[None]:
    """Within the block, ``module``'s stores are evaluated with ``modalities`` only; their own
    setting comes back after."""
    masks = modality_masks(module)
    before = [mask.eval_modalities for mask in masks]
    try:
        set_eval_modalities(module, modalities)
        yield
    finally:
        for mask, previous in zip(masks, before, strict=True):
            mask.eval_modalities = previous


def knob_problems(
    adapter: str,
    cached: bool,
    modalities: list[str],
    dropout: float,
    evaluation: Mapping[str, Any],
    prune: Mapping[str, Any],
) -> list[str]:
    """The config's modality knobs against its tower: ``adapter`` (its name) reads the cache
    (``cached``) with ``modalities`` (those with an encoder selected); ``dropout`` is
    ``adapter.modality_dropout``, ``evaluation`` the ``eval`` section, ``prune`` the ``prune``
    one. One line per problem, naming the key."""
    lines = []
    reads = f"adapter {adapter!r} reads " + (f"the cached modalities {modalities}" if cached else "no cache")
    if dropout > 0 and (not cached or len(modalities) < 2):
        lines.append(f"adapter.modality_dropout: {dropout}: drops modalities of cached features, so it needs "
                     f"a tower reading >= 2 of them; {reads}")
    subsets = [("eval.modalities", evaluation.get("modalities"))]
    subsets += [("eval.modality_subsets", s) for s in evaluation.get("modality_subsets") or []]
    for key, subset in subsets:
        if subset is not None and (not cached or not set(subset) <= set(modalities)):
            lines.append(f"{key}: {list(subset)}: must be a non-empty subset of the cached modalities of the "
                         f"adapter; {reads}")
    threshold = prune.get("gate_threshold")
    if threshold is not None and (not cached or len(modalities) < 2):
        lines.append(f"prune.gate_threshold: {threshold}: prunes cached modalities by their fusion gates, so "
                     f"it needs a tower with gates over >= 2 of them (adapter=crossan); {reads}")
    if threshold is not None and evaluation.get("modalities") is not None:
        lines.append(f"prune.gate_threshold: {threshold}: reads the gate weights of a validation pass with "
                     "every modality; leave eval.modalities null")
    return lines
