"""Weight initialisation schemes shared by the user encoder and the ID item tower.

``xavier_normal`` is the IISAN reference's (std sqrt(2 / (fan_in + fan_out)): an item table
of 20k rows starts near 0.01, a 10-row position table near 0.16); ``normal`` draws N(0, std)
for every table alike (RecBole's and BERT's std 0.02).
"""

from __future__ import annotations

import torch
from torch import nn

INITS = ("xavier_normal", "normal")


def init_weight(weight: torch.Tensor, init: str, std: float = 0.02) -> None:
    """Initialise ``weight`` in place by the scheme ``init`` (``INITS``)."""
    if init == "xavier_normal":
        nn.init.xavier_normal_(weight)
    elif init == "normal":
        nn.init.normal_(weight, std=std)
    else:
        raise ValueError(f"init {init!r} not in {INITS}")
