"""Registry of frozen encoders: YAML ``kind`` -> encoder class.

Example:
    >>> @register_encoder("my_text")
    ... class MyText(FrozenEncoder): ...
    >>> enc = build_encoder({"kind": "my_text", "name": "mine", ...})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from recsys.encoders.base import FrozenEncoder

_ENCODERS: dict[str, type[FrozenEncoder]] = {}


def register_encoder(kind: str) -> Callable[[type[FrozenEncoder]], type[FrozenEncoder]]:
    """Class decorator registering a FrozenEncoder subclass under ``kind``."""

    def decorate(cls: type[FrozenEncoder]) -> type[FrozenEncoder]:
        if kind in _ENCODERS:
            raise ValueError(f"encoder kind {kind!r} is already registered")
        cls.kind = kind
        _ENCODERS[kind] = cls
        return cls

    return decorate


def list_encoders() -> list[str]:
    """Sorted registered encoder kinds."""
    return sorted(_ENCODERS)


def build_encoder(cfg: Mapping[str, Any]) -> FrozenEncoder:
    """Build an encoder from a plain mapping (an ``encoder/<modality>/*.yaml`` group):
    ``kind`` selects the class, every other key is a constructor keyword."""
    params = dict(cfg)
    kind = params.pop("kind", None)
    if kind not in _ENCODERS:
        raise KeyError(f"unknown encoder kind {kind!r}; registered: {list_encoders()}")
    return _ENCODERS[kind](**params)
