"""RNGStateCallback: random-number-generator states travel with the checkpoints.

Lightning restores weights, optimiser, loop counters and callback states on resume, but not
the global RNGs, so dropout after a resume would draw other masks than the uninterrupted run.
This callback's state (saved in every checkpoint, restored by ``trainer.fit(ckpt_path=...)``)
is the Python, NumPy, torch CPU and CUDA generator states, held as plain ints and tensors so
that checkpoints still load with ``torch.load(weights_only=True)``. With
``trainer.deterministic=true`` and the datamodule's (seed, epoch) shuffle, a run killed and
resumed from ``last.ckpt`` ends with the metrics of the uninterrupted run.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


class RNGStateCallback(pl.Callback):
    """Save and restore the global RNG states with each checkpoint (see module docstring)."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "python": random.getstate(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        version, internal, gauss_next = state_dict["python"]
        random.setstate((version, tuple(internal), gauss_next))
        n = state_dict["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
