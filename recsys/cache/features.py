"""FeatureStore: the training-time view of cached frozen-encoder hidden states.

Item towers read per-layer features of items by id through this module. It holds one
tensor per modality, shaped [N+1, L, D_max] (row 0 = padding item, zeros; layer l is valid
in its first ``widths[l]`` columns, zero-padded past them), in the cache's storage
(recsys/cache/codecs.py): float16 (default), float32, bfloat16, float8_e4m3fn, or int8 with
float32 scales broadcast against it ([1, L, D_max]: per entry and column; [N+1, L, 1]: per
item and entry). ``gather`` dequantises only the rows it returns: int8 -> values * scales and
float8 -> float32; float16 / bfloat16 / float32 come back as stored (the towers cast them to
their own dtype).

Two residencies:
- device-resident (default when it fits): features are registered as non-persistent
  buffers, so ``module.to(device)`` moves them and checkpoints do not store them; a lookup
  is one ``index_select`` on the device.
- host (memory-mapped or CPU): features stay on the host; a lookup gathers the needed rows
  on the host and copies only them to the device of the ids.

Missing modalities: ``mask`` (``recsys.adapters.modality_mask.ModalityMask``) zeroes the rows
of modalities dropped while training (``adapter.modality_dropout``) or left out of an
evaluation (``eval.modalities``); with neither set, ``gather`` returns the rows as stored.

Example:
    >>> store = FeatureStore({"text": torch.zeros(11, 7, 384, dtype=torch.float16)},
    ...                      {"text": [384] * 7})
    >>> store.gather("text", torch.tensor([[1, 2], [3, 0]])).shape
    torch.Size([2, 2, 7, 384])
"""

from __future__ import annotations

import torch
from torch import nn

from recsys.adapters.modality_mask import ModalityMask, present
from recsys.cache.codecs import dequantise

PRESENCE_CHUNK = 4096  # items read at a time when scanning a table for missing modalities


class FeatureStore(nn.Module):
    """Per-modality cached features indexed by item id.

    Args:
        features: modality -> tensor [N+1, L, D_max] (a float dtype, fp16 typical, or int8).
        widths: modality -> list of L ints, the real width of each layer.
        device_resident: True -> buffers that follow the module's device; False -> kept on
            the host and gathered per lookup (for caches larger than device memory).
        scales: modality -> float32 scales of its int8 features, [1, L, D_max] or
            [N+1, L, 1] (features ~ values * scales); required for int8 features, only for them.
    """

    def __init__(
        self,
        features: dict[str, torch.Tensor],
        widths: dict[str, list[int]],
        device_resident: bool = True,
        scales: dict[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if set(features) != set(widths):
            raise ValueError(f"features {sorted(features)} and widths {sorted(widths)} differ")
        n_items = {m: f.shape[0] for m, f in features.items()}
        if len(set(n_items.values())) > 1:
            raise ValueError(f"modalities disagree on the number of items (+1 pad): {n_items}")
        for m, f in features.items():
            if f.dim() != 3 or f.shape[1] != len(widths[m]) or max(widths[m]) > f.shape[2]:
                raise ValueError(
                    f"features[{m!r}] has shape {tuple(f.shape)}, expected [N+1, "
                    f"{len(widths[m])}, >={max(widths[m])}] for widths {widths[m]}"
                )
        scales = scales or {}
        quantised = sorted(m for m, f in features.items() if f.dtype == torch.int8)
        if sorted(scales) != quantised:
            raise ValueError(f"scales are given for {sorted(scales)}, the int8 features are {quantised}")
        for m, scale in scales.items():
            allowed = ([1, *features[m].shape[1:]], [*features[m].shape[:2], 1])
            if list(scale.shape) not in allowed or scale.dtype != torch.float32:
                raise ValueError(f"scales[{m!r}] is {scale.dtype} {list(scale.shape)}, expected "
                                 f"float32 {allowed[0]} or {allowed[1]}")
        self.modalities = list(features)
        self.widths = {m: list(map(int, w)) for m, w in widths.items()}
        self.device_resident = device_resident
        self._host: dict[str, torch.Tensor] = {}
        tensors = {**{f"features_{m}": f for m, f in features.items()},
                   **{f"scales_{m}": scale for m, scale in scales.items()}}
        for name, tensor in tensors.items():
            if device_resident:
                self.register_buffer(name, tensor, persistent=False)
            else:
                self._host[name] = tensor
        self.mask = ModalityMask(self.modalities, self.presence)

    def _apply(self, fn, recurse=True):
        """Follow device moves but keep the stored dtype: ``tower.float()`` or a
        precision plugin must not silently double the size of the cached features."""
        for name, buf in self._buffers.items():
            if buf is not None:  # probe fn on an empty tensor to learn the target device
                self._buffers[name] = buf.to(fn(buf.new_empty(0)).device)
        return self

    @property
    def num_items(self) -> int:
        """N, the number of real items (ids 1..N)."""
        return self.table(self.modalities[0]).shape[0] - 1

    def _tensor(self, name: str) -> torch.Tensor | None:
        return self._buffers.get(name) if self.device_resident else self._host.get(name)

    def table(self, modality: str) -> torch.Tensor:
        """The whole feature tensor of a modality, [N+1, L, D_max], in the stored dtype."""
        return self._tensor(f"features_{modality}")

    def scales(self, modality: str) -> torch.Tensor | None:
        """The float32 scales of a modality's int8 table ([1, L, D_max] or [N+1, L, 1]);
        None for float tables."""
        return self._tensor(f"scales_{modality}")

    def gather(self, modality: str, ids: torch.Tensor) -> torch.Tensor:
        """Features of items ``ids`` ([...] long) -> [..., L, D_max] floats (``dequantise``:
        the stored dtype for float16 / bfloat16 / float32 tables, else float32), on the
        device of ``ids``, the rows ``mask`` removes zeroed. Host tables send only the stored
        rows to that device."""
        return self.mask(modality, ids, self._stored_rows(modality, ids))

    def presence(self) -> torch.Tensor:
        """Whether each item has each modality: [N+1, M] bool (columns in ``modalities``
        order; row 0, the padding id, False), on the device of the tables; reads every row."""
        device = self.table(self.modalities[0]).device if self.device_resident else torch.device("cpu")
        ids = torch.arange(self.num_items + 1, device=device)
        columns = [torch.cat([present(self._stored_rows(m, chunk)) for chunk in ids.split(PRESENCE_CHUNK)])
                   for m in self.modalities]
        return torch.stack(columns, dim=-1)

    def _stored_rows(self, modality: str, ids: torch.Tensor) -> torch.Tensor:
        """``gather`` without the mask."""
        table, scales = self.table(modality), self.scales(modality)
        flat = ids.reshape(-1) if self.device_resident else ids.reshape(-1).cpu()
        rows = table.index_select(0, flat)
        if scales is not None and scales.shape[0] > 1:  # one scale per item and entry
            scales = scales.index_select(0, flat)
        if not self.device_resident:
            rows = rows.to(ids.device, non_blocking=True)
            scales = None if scales is None else scales.to(ids.device, non_blocking=True)
        return dequantise(rows, scales).reshape(*ids.shape, *table.shape[1:])
