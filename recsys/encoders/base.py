"""FrozenEncoder: the contract every frozen foundation encoder follows.

An encoder turns item records (rows of ``items.parquet`` as dicts: ``title``,
``image_path``, ...) into per-layer features: ``preprocess(records) -> batch`` then
``encode(batch) -> Tensor [B, L, D_max]`` (float32; layer l valid in its first
``layer_widths[l]`` columns, zero past them). Rows whose ``batch["valid"]`` is False
(no / unreadable image, audio or video file) are all zeros.

Subclasses implement ``preprocess``, ``hidden_states`` (every entry, pooled) and
``preprocessing``; they set ``modality``, ``model`` (the frozen backbone whose state dict is
hashed), ``source`` (where the weights came from) and ``all_widths`` (width of every
hidden-state entry). Image encoders share ``ImageEncoder`` (recsys/encoders/images.py),
video encoders ``VideoEncoder`` (recsys/encoders/videos.py).

Which entries are kept (and cached): every one, an explicit ``layers`` list, or
``layer_groups`` G, the IISAN-Versa group layer-dropping schedule (embedding output + the
last layer of each of G even groups, ``recsys.adapters.layer_schedule``), so a cache holds
only the entries a Versa tower reads: 7 instead of 33 for a 32-layer LLM with G = 6.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from recsys.adapters.layer_schedule import group_layer_schedule
from recsys.config.options import parameters_of
from recsys.encoders.weights import state_dict_sha256


class FrozenEncoder(nn.Module):
    """Base class: always in eval mode, no gradients, layer selection and padding.

    Args:
        name: unique encoder name (cache file stem).
        layers: indices into the encoder's hidden-state entries to keep (None = all).
        layer_groups: keep the group layer-dropping schedule of G groups instead (None = off;
            exclusive with ``layers``).
        pooling: how a layer becomes one vector per item (encoder specific).
        batch_size: items per encoding batch (used by the cache builder).
    """

    modality: str
    model: nn.Module
    source: dict[str, Any]  # where the weights came from (informative; the hash identifies them)
    all_widths: list[int]

    def __init__(
        self,
        name: str,
        layers: list[int] | None,
        pooling: str,
        batch_size: int,
        layer_groups: int | None = None,
    ):
        super().__init__()
        if layers is not None and layer_groups is not None:
            raise ValueError(
                f"encoder {name!r}: give either layers={list(layers)} or layer_groups={layer_groups}, "
                "not both (set the other to null)"
            )
        self.name = name
        self._layers = None if layers is None else [int(i) for i in layers]
        self.layer_groups = None if layer_groups is None else int(layer_groups)
        self.pooling = pooling
        self.batch_size = int(batch_size)
        self._weights_sha256: str | None = None

    def _freeze(self) -> None:
        """Call once ``self.model`` and ``self.all_widths`` are set."""
        self.model.requires_grad_(False)
        self.eval()
        if self.layer_groups is not None:
            try:
                self._layers = group_layer_schedule(len(self.all_widths), self.layer_groups)
            except ValueError as err:
                raise ValueError(f"encoder {self.name!r}: layer_groups: {err}") from err
        bad = [i for i in self.layers if not 0 <= i < len(self.all_widths)]
        if bad:
            raise ValueError(
                f"encoder {self.name!r}: layers {bad} out of range, it has "
                f"{len(self.all_widths)} hidden-state entries (0..{len(self.all_widths) - 1})"
            )

    @classmethod
    def option_parameters(cls) -> list[inspect.Parameter]:
        """The config keys of this encoder kind (besides ``kind``): its constructor's
        parameters; a ``**options`` parameter forwards to a base class, whose are added."""
        params: list[inspect.Parameter] = []
        for klass in cls.__mro__:
            if "__init__" not in klass.__dict__ or klass is FrozenEncoder:
                continue
            own = parameters_of(klass.__dict__["__init__"], skip=1)
            params += [p for p in own if p.kind is p.POSITIONAL_OR_KEYWORD or p.kind is p.KEYWORD_ONLY
                       if p.name not in {q.name for q in params}]
            if not any(p.kind is p.VAR_KEYWORD for p in own):
                break
        return params

    def train(self, mode: bool = True) -> FrozenEncoder:
        """Frozen: stays in eval mode whatever is asked (no dropout, fixed BN stats)."""
        return super().train(False)

    @property
    def layers(self) -> list[int]:
        """Indices of the kept hidden-state entries, in output order."""
        return list(range(len(self.all_widths))) if self._layers is None else self._layers

    @property
    def layer_widths(self) -> list[int]:
        """Width of each kept entry, in output order (length L)."""
        return [self.all_widths[i] for i in self.layers]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def preprocess(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Records -> model inputs (CPU tensors) plus ``valid`` bool [B]."""
        raise NotImplementedError

    def hidden_states(self, batch: dict[str, Any]) -> list[torch.Tensor]:
        """Model inputs on ``self.device`` -> every hidden-state entry pooled, [B, D_l]."""
        raise NotImplementedError

    def preprocessing(self) -> dict[str, Any]:
        """Preprocessing settings that change the features (for the manifest)."""
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, batch: dict[str, Any]) -> torch.Tensor:
        """Batch from ``preprocess`` -> features [B, L, D_max] float32 on ``self.device``."""
        inputs = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        entries = self.hidden_states(inputs)
        kept = [entries[i].float() for i in self.layers]
        d_max = max(self.layer_widths)
        out = torch.zeros(kept[0].shape[0], len(kept), d_max, device=self.device)
        for j, h in enumerate(kept):
            out[:, j, : h.shape[-1]] = h
        return out * inputs["valid"].to(out.dtype)[:, None, None]

    def identity(self) -> dict[str, Any]:
        """What the cached features depend on: name, weights sha256, preprocessing, pooling,
        layers (hidden-state entry indices) and their widths."""
        if self._weights_sha256 is None:
            self._weights_sha256 = state_dict_sha256(self.model.state_dict())
        return {
            "name": self.name,
            "kind": type(self).kind,
            "modality": self.modality,
            "source": self.source,
            "weights_sha256": self._weights_sha256,
            "preprocessing": self.preprocessing(),
            "pooling": self.pooling,
            "layers": self.layers,
            "layer_widths": self.layer_widths,
        }
