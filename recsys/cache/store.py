"""Load cached hidden states into a FeatureStore for training.

``load_feature_store(cache_dir, {"text": "minilm", "image": "efficientnet_lite0"},
layers={"text": [0, 2, 4, 6], "image": None})`` reads each encoder's manifest, refuses an
incomplete cache or one built for another dataset (fingerprint), and keeps only the
requested hidden-state entries (indices as in the manifest's ``encoder.layers``; None = all
cached) and only the columns they need.

Residency:
- ``device``: the selected features are copied into memory once (torch tensors, buffers of
  the store; moved to ``device`` if given), one ``index_select`` per lookup;
- ``host``: the store wraps a read-only memmap of the file (a strided view, nothing is
  read up front); lookups copy only the needed rows out of it;
- ``auto``: ``device`` when the features fit (CUDA: under half the free device memory;
  CPU: under half the available RAM), else ``host``.

Example:
    >>> store = load_feature_store("data/cache/movielens", {"text": "minilm"})
    >>> store.gather("text", torch.tensor([[1, 2]])).shape
    torch.Size([1, 2, 7, 384])
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import numpy as np
import torch

from recsys.cache.features import FeatureStore
from recsys.cache.manifest import CacheMismatchError, CachePaths, read_json

log = logging.getLogger(__name__)

RESIDENCIES = ("auto", "device", "host")
FIT_FRACTION = 0.5


def _open(
    cache_dir: str | os.PathLike, modality: str, name: str, fingerprint: str | None
) -> tuple[dict[str, Any], np.ndarray]:
    """(manifest, read-only memmap [N+1, L, D_max]) of a finished, matching cache."""
    paths = CachePaths.of(cache_dir, name)
    manifest = read_json(paths.manifest)
    if manifest is None or not paths.features.exists():
        raise FileNotFoundError(f"no feature cache for encoder {name!r} in {cache_dir} (run recsys-cache)")
    if not manifest.get("complete"):
        raise CacheMismatchError(f"cache {paths.features} is incomplete (rerun recsys-cache)")
    if manifest["encoder"]["modality"] != modality:
        raise CacheMismatchError(
            f"cache {name!r} holds {manifest['encoder']['modality']} features, not {modality}"
        )
    if fingerprint is not None and manifest["dataset_fingerprint"] != fingerprint:
        raise CacheMismatchError(
            f"cache {paths.features} was built for another dataset: fingerprint "
            f"{manifest['dataset_fingerprint']} != {fingerprint} (rerun recsys-cache)"
        )
    array = np.load(paths.features, mmap_mode="r")
    if list(array.shape) != manifest["shape"] or str(array.dtype) != manifest["dtype"]:
        raise CacheMismatchError(
            f"{paths.features} is {array.dtype}{list(array.shape)}, its manifest says "
            f"{manifest['dtype']}{manifest['shape']}"
        )
    return manifest, array


def _positions(manifest: dict[str, Any], wanted: list[int] | None) -> list[int]:
    """Positions in the cached array of the wanted hidden-state entries."""
    cached = manifest["encoder"]["layers"]
    if wanted is None:
        return list(range(len(cached)))
    absent = [i for i in wanted if i not in cached]
    if absent:
        raise CacheMismatchError(
            f"layers {absent} of {manifest['encoder']['name']!r} are not cached "
            f"(cached hidden-state entries: {cached})"
        )
    return [cached.index(i) for i in wanted]


def _select(array: np.ndarray, positions: list[int], width: int, copy: bool) -> torch.Tensor:
    """[N+1, len(positions), width] from [N+1, L, D_max]: a copy, or a strided view of the
    memmap when the positions are evenly spaced (else a copy, with a warning)."""
    steps = set(np.diff(positions).tolist())
    if not copy and len(steps) <= 1 and all(s > 0 for s in steps):
        step = steps.pop() if steps else 1
        view = array[:, positions[0] : positions[-1] + 1 : step, :width]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not writable.*")
            return torch.from_numpy(view)
    if not copy:
        log.warning("layers %s are not evenly spaced: copying them into host memory", positions)
    return torch.from_numpy(np.ascontiguousarray(array[:, positions, :width]))


def _fits(nbytes: int, device: torch.device) -> bool:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return nbytes <= FIT_FRACTION * free


def load_feature_store(
    cache_dir: str | os.PathLike,
    encoders: dict[str, str],
    layers: dict[str, list[int] | None] | None = None,
    residency: str = "auto",
    fingerprint: str | None = None,
    device: str | torch.device | None = None,
) -> FeatureStore:
    """FeatureStore over the caches of ``encoders`` (modality -> encoder name).

    Args:
        layers: modality -> hidden-state entry indices to keep (None / absent = all cached).
        residency: ``auto`` | ``device`` | ``host`` (see module docstring).
        fingerprint: the dataset's fingerprint; a cache built for another refuses to load.
        device: where a device-resident store goes (default: CUDA if available, else CPU
            for the ``auto`` decision, and the store is left on the CPU).
    Returns: FeatureStore with per modality [N+1, L_sel, max selected width] fp16.
    """
    if residency not in RESIDENCIES:
        raise ValueError(f"residency {residency!r} not in {RESIDENCIES}")
    layers = layers or {}
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    opened = {m: _open(cache_dir, m, name, fingerprint) for m, name in encoders.items()}
    plan = {}
    for modality, (manifest, array) in opened.items():
        positions = _positions(manifest, layers.get(modality))
        widths = [manifest["encoder"]["layer_widths"][p] for p in positions]
        plan[modality] = (array, positions, widths)
    nbytes = sum(a.shape[0] * len(p) * max(w) * a.itemsize for a, p, w in plan.values())
    resident = residency == "device" or (residency == "auto" and _fits(nbytes, target))
    log.info("feature store: %.1f MB, %s", nbytes / 2**20, "device" if resident else "host")
    features = {m: _select(a, p, max(w), copy=resident) for m, (a, p, w) in plan.items()}
    store = FeatureStore(features, {m: w for m, (_, _, w) in plan.items()}, resident)
    return store.to(target) if resident and device is not None else store
