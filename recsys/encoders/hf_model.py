"""Loading a frozen Hugging Face backbone: pretrained weights or the real architecture with
random weights, one code path for text and image encoders.

- ``pretrained=True``: ``from_pretrained(resolve_weights(name_or_path))`` (hub name, local
  directory, or ``pkg:<module>``); offline without the files -> a clear error saying how to
  pass a local directory or switch to random weights.
- ``pretrained=False``: ``AutoConfig.for_model(arch, **arch_overrides)`` (transformers'
  defaults for ``bert`` / ``vit`` are bert-base-uncased / ViT-B/16-224) and random weights
  drawn under ``seed`` (same shapes and cost, reproducible weight hash).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn
from transformers import AutoConfig, AutoModel

from recsys.encoders.weights import resolve_weights, seeded

T = TypeVar("T")


def from_pretrained_or_explain(load: Callable[[str], T], spec: str, what: str, key: str) -> T:
    """``load(resolve_weights(spec))``; a missing/offline source raises OSError naming the
    model and the config keys to change (``key`` is e.g. ``encoder.text``)."""
    try:
        return load(resolve_weights(spec))
    except OSError as err:
        raise OSError(
            f"cannot load the {what} of {spec!r} (offline, or not a local directory): {err}\n"
            f"Pass a local copy with `{key}.name_or_path=/path/to/dir`, or set "
            f"`{key}.pretrained=false` to build the architecture with random weights."
        ) from err


def load_hf_backbone(
    name_or_path: str,
    pretrained: bool,
    arch: str | None,
    arch_overrides: dict[str, Any] | None,
    seed: int,
    key: str,
) -> nn.Module:
    """The frozen transformers ``AutoModel`` (eval mode) for an encoder config."""
    if pretrained:
        if arch_overrides:
            raise ValueError(f"{key}.arch_overrides only applies with pretrained=false")
        model = from_pretrained_or_explain(AutoModel.from_pretrained, name_or_path, "weights", key)
    else:
        if arch is None:
            raise ValueError(
                f"{key}.pretrained=false needs {key}.arch (a transformers model_type such as "
                f"'bert' or 'vit') to build {name_or_path!r} with random weights"
            )
        config = AutoConfig.for_model(arch, **(arch_overrides or {}))
        with seeded(seed):
            model = AutoModel.from_config(config)
    return model.eval()


def source_info(
    name_or_path: str, pretrained: bool, arch: str | None, overrides: dict[str, Any] | None
) -> dict[str, Any]:
    """Manifest ``source`` entry of a Hugging Face backbone."""
    return {
        "name_or_path": name_or_path,
        "pretrained": pretrained,
        "arch": arch,
        "arch_overrides": dict(overrides or {}),
    }
