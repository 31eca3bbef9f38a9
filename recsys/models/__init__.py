"""User encoders (sequence models over item embeddings) and their registry.

A user encoder maps item embeddings ``[B, T, d]`` and a padding mask ``[B, T]`` to states
``[B, T, d]``; it is selected by ``model.name`` (``conf/model/<name>.yaml``) and built from
the remaining keys, its constructor's typed parameters (``d_model`` among them: the width
every item tower produces). Members: this package's modules and the entry-point group
``recsys.models`` (``recsys.registry``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from recsys.registry import Registry

USER_ENCODERS: Registry[type[nn.Module]] = Registry("user encoder", package=__name__, group="recsys.models")


def register_user_encoder(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator registering a user encoder under ``name``."""
    return USER_ENCODERS.register(name)


def build_user_encoder(name: str, **options: Any) -> nn.Module:
    """The user encoder registered as ``name``, built with ``options``."""
    return USER_ENCODERS.get(name)(**options)


def user_encoder_name(encoder: nn.Module) -> str:
    """The registry name of ``encoder``'s class (ValueError if it is not registered)."""
    for name, cls in USER_ENCODERS.items():
        if type(encoder) is cls:
            return name
    raise ValueError(f"{type(encoder).__name__} is not a registered user encoder: {USER_ENCODERS.names()}")
