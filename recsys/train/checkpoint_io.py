"""Checkpoint files: written so they are never visible half-written, read without running code.

Lightning's ``TorchCheckpointIO`` writes ``best.ckpt`` / ``last.ckpt`` in place: a job killed
or out of disk space mid-write leaves a truncated zip that the resume command then fails on.
``AtomicCheckpointIO`` writes each checkpoint to a temporary name in the same directory,
flushes it to disk (``fsync``), renames it over the old one and syncs the directory
(``recsys.atomic_io.atomic_path``). A failed write removes the temporary, so the previous
checkpoint stays whole and the space is freed for ``results.json`` (``status: failed``,
the error). ``recsys-train`` always trains with it (local file systems).

``load_checkpoint`` reads one with ``torch.load(weights_only=True)``: tensors and plain
containers only; a file that would run code when unpickled raises instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins import TorchCheckpointIO

from recsys.atomic_io import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with temp file + fsync + rename instead of an in-place write."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
        directory = os.open(Path(path).absolute().parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself reaches the disk
        finally:
            os.close(directory)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A Lightning checkpoint's contents (on CPU), loaded with ``weights_only=True``."""
    return torch.load(path, map_location="cpu", weights_only=True)
