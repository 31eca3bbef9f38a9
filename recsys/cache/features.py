"""FeatureStore: the training-time view of cached frozen-encoder hidden states.

Item towers read per-layer features of items by id through this module. It holds one
tensor per modality, shaped [N+1, L, D_max] (row 0 = padding item, zeros; layer l is valid
in its first ``widths[l]`` columns, zero-padded past them), usually fp16.

Two residencies:
- device-resident (default when it fits): features are registered as non-persistent
  buffers, so ``module.to(device)`` moves them and checkpoints do not store them; a lookup
  is one ``index_select`` on the device.
- host (memory-mapped or CPU): features stay on the host; a lookup gathers the needed rows
  on the host and copies only them to the device of the ids.

Example:
    >>> store = FeatureStore({"text": torch.zeros(11, 7, 384, dtype=torch.float16)},
    ...                      {"text": [384] * 7})
    >>> store.gather("text", torch.tensor([[1, 2], [3, 0]])).shape
    torch.Size([2, 2, 7, 384])
"""

from __future__ import annotations

import torch
from torch import nn


class FeatureStore(nn.Module):
    """Per-modality cached features indexed by item id.

    Args:
        features: modality -> tensor [N+1, L, D_max] (any float dtype; fp16 typical).
        widths: modality -> list of L ints, the real width of each layer.
        device_resident: True -> buffers that follow the module's device; False -> kept on
            the host and gathered per lookup (for caches larger than device memory).
    """

    def __init__(
        self,
        features: dict[str, torch.Tensor],
        widths: dict[str, list[int]],
        device_resident: bool = True,
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
        self.modalities = list(features)
        self.widths = {m: list(map(int, w)) for m, w in widths.items()}
        self.device_resident = device_resident
        self._host: dict[str, torch.Tensor] = {}
        for m, f in features.items():
            if device_resident:
                self.register_buffer(self._buffer_name(m), f, persistent=False)
            else:
                self._host[m] = f

    @staticmethod
    def _buffer_name(modality: str) -> str:
        return f"features_{modality}"

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

    def table(self, modality: str) -> torch.Tensor:
        """The whole feature tensor of a modality, [N+1, L, D_max]."""
        if self.device_resident:
            return getattr(self, self._buffer_name(modality))
        return self._host[modality]

    def gather(self, modality: str, ids: torch.Tensor) -> torch.Tensor:
        """Features of items ``ids`` ([...] long) -> [..., L, D_max] in the stored dtype,
        on the device of ``ids``."""
        table = self.table(modality)
        if self.device_resident:
            return table.index_select(0, ids.reshape(-1)).reshape(*ids.shape, *table.shape[1:])
        rows = table.index_select(0, ids.reshape(-1).cpu())
        return rows.reshape(*ids.shape, *table.shape[1:]).to(ids.device, non_blocking=True)
