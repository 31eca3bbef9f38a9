"""Registry of frozen encoders: YAML ``kind`` -> encoder class (``recsys.registry``).

Every module of ``recsys.encoders`` and the entry-point group ``recsys.encoders`` is searched,
so a new kind is one module with ``@register_encoder("my_kind")`` (and its config under
``conf/encoder/<modality>/``).

Example:
    >>> @register_encoder("my_text")
    ... class MyText(FrozenEncoder): ...
    >>> enc = build_encoder({"kind": "my_text", "name": "mine", ...})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import AfterValidator

from recsys.encoders.base import FrozenEncoder
from recsys.registry import Registry

ENCODERS: Registry[type[FrozenEncoder]] = Registry(
    "encoder kind", package="recsys.encoders", group="recsys.encoders"
)


def _checked(config: dict[str, Any]) -> dict[str, Any]:
    from recsys.config.schema import encoder_problems

    lines = encoder_problems(None, config, "")
    if lines:
        raise ValueError("; ".join(line.lstrip(".: ") for line in lines))
    return config


#: A nested encoder config (e.g. the ``frames`` kind's ``image_encoder``), checked against
#: its own kind when the outer config is.
EncoderConfig = Annotated[dict[str, Any], AfterValidator(_checked)]


def register_encoder(kind: str) -> Callable[[type[FrozenEncoder]], type[FrozenEncoder]]:
    """Class decorator registering a FrozenEncoder subclass under ``kind``."""

    def decorate(cls: type[FrozenEncoder]) -> type[FrozenEncoder]:
        cls.kind = kind
        return ENCODERS.register(kind)(cls)

    return decorate


def list_encoders() -> list[str]:
    """Sorted registered encoder kinds."""
    return ENCODERS.names()


def build_encoder(cfg: Mapping[str, Any]) -> FrozenEncoder:
    """Build an encoder from a plain mapping (an ``encoder/<modality>/*.yaml`` group):
    ``kind`` selects the class, every other key is a constructor keyword."""
    params = dict(cfg)
    return ENCODERS.get(params.pop("kind", None))(**params)
