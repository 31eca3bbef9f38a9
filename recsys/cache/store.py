"""Load cached hidden states into a FeatureStore for training.

``load_feature_store(cache_dir, {"text": "minilm", "image": "efficientnet_lite0"},
layers={"text": [0, 2, 4, 6], "image": None})`` opens each encoder's cache
(``open_caches``: under the cache's lock, so never halfway through a rebuild), refuses a
broken one (unreadable or incomplete manifest, array missing, truncated or not matching its
checksum: recsys/cache/integrity.py, ``verify``) or one built for other item data (its
``inputs_fingerprint`` differs from the expected one), with an error naming the file and
saying to run recsys-cache, and keeps only the requested hidden-state entries (indices as in
the manifest's ``encoder.layers``; None = all cached) and only the columns they need
(``feature_store``). The features stay in the cache's storage (recsys/cache/codecs.py): a
bfloat16 or float8 cache is viewed as that torch dtype, an int8 one keeps its int8 values and
float32 scales (selected alike), and ``FeatureStore.gather`` dequantises the rows it returns;
an int8 store takes half the memory of a float16 one.

Residency:
- ``device``: the selected features (and scales) are copied into memory once (torch
  tensors, buffers of the store; moved to ``device`` if given), one ``index_select`` per
  lookup;
- ``host``: the store wraps read-only memmaps of the files (strided views, nothing is
  copied up front; the checksum check reads each file once); lookups copy only the needed
  rows out of them;
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
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from recsys.cache.codecs import codec
from recsys.cache.features import FeatureStore
from recsys.cache.integrity import DEFAULT_VERIFY, open_arrays, read_manifest
from recsys.cache.manifest import CacheMismatchError, CachePaths
from recsys.locking import exclusive

log = logging.getLogger(__name__)

RESIDENCIES = ("auto", "device", "host")
FIT_FRACTION = 0.5


class OpenedCache(NamedTuple):
    """A verified cache: its manifest and read-only memmaps of its values [N+1, L, D_max]
    (numpy storage dtype) and, for int8, its scales ([1, L, D_max] or [N+1, L, 1]; else None)."""

    manifest: dict[str, Any]
    values: np.ndarray
    scales: np.ndarray | None = None


def _expected(fingerprint: str | Mapping[str, str] | None, modality: str) -> str | None:
    if fingerprint is None or isinstance(fingerprint, str):
        return fingerprint
    return fingerprint.get(modality)


def _broken(err: CacheMismatchError) -> CacheMismatchError:
    return CacheMismatchError(f"{err}: run recsys-cache (cache.on_mismatch=rebuild) to rebuild it")


def _open_one(
    paths: CachePaths, modality: str, expected: str | None, dtype: str | None, verify: str
) -> OpenedCache | None:
    """The cache at ``paths`` once its manifest holds ``modality`` features built for the
    ``expected`` inputs, in ``dtype`` (None: any), and its arrays are verified (the costly
    part, so it comes last)."""
    try:
        manifest = read_manifest(paths)
    except CacheMismatchError as err:
        raise _broken(err) from None
    if manifest is None:
        return None
    if manifest["encoder"]["modality"] != modality:
        raise CacheMismatchError(
            f"cache {manifest['encoder']['name']!r} holds {manifest['encoder']['modality']} "
            f"features, not {modality}"
        )
    if expected is not None and manifest["inputs_fingerprint"] != expected:
        raise CacheMismatchError(
            f"cache {paths.features} was built for another dataset (or other media files): inputs "
            f"fingerprint {manifest['inputs_fingerprint']} != {expected} (rerun recsys-cache)"
        )
    if dtype is not None and manifest["dtype"] != dtype:
        raise CacheMismatchError(
            f"cache {paths.features} holds {manifest['dtype']} features, not {dtype} (cache.dtype): run "
            f"recsys-cache cache.dtype={dtype}, which puts them in their own directory"
        )
    try:
        return OpenedCache(manifest, *open_arrays(paths, manifest, verify))
    except CacheMismatchError as err:
        raise _broken(err) from None


def open_caches(
    cache_dir: str | os.PathLike,
    encoders: dict[str, str],
    fingerprint: str | Mapping[str, str] | None = None,
    verify: str = DEFAULT_VERIFY,
    lock_wait_s: float | None = None,
    dtype: str | None = None,
) -> dict[str, OpenedCache]:
    """modality -> the verified cache of ``encoders[modality]`` (see ``load_feature_store``
    for the arguments); FileNotFoundError / CacheMismatchError naming the file otherwise."""
    opened = {}
    for modality, name in encoders.items():
        paths = CachePaths.of(cache_dir, name)
        cache = None
        if paths.manifest.exists():  # checked first: no lock file is made in a wrong directory
            with exclusive(paths.lock, f"cache {paths.features}", lock_wait_s):
                cache = _open_one(paths, modality, _expected(fingerprint, modality), dtype, verify)
        if cache is None:
            raise FileNotFoundError(f"no feature cache for encoder {name!r} in {cache_dir}: run recsys-cache")
        opened[modality] = cache
    return opened


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
    """[N+1, len(positions), width] from [N+1, L, D_max] (int8 scales: [1 | N+1, L, D_max | 1],
    the same entries and at most ``width`` columns): a copy, or a strided view of the memmap
    when the positions are evenly spaced (else a copy, with a warning)."""
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


def _selected_bytes(array: np.ndarray | None, positions: list[int], width: int) -> int:
    """Bytes of what ``_select`` takes of ``array`` (values or scales; None: 0)."""
    if array is None:
        return 0
    return array.shape[0] * len(positions) * min(width, array.shape[2]) * array.itemsize


def _fits(nbytes: int, device: torch.device) -> bool:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return nbytes <= FIT_FRACTION * free


def feature_store(
    opened: dict[str, OpenedCache],
    layers: dict[str, list[int] | None] | None = None,
    residency: str = "auto",
    device: str | torch.device | None = None,
) -> FeatureStore:
    """FeatureStore over caches from ``open_caches`` (arguments: ``load_feature_store``)."""
    if residency not in RESIDENCIES:
        raise ValueError(f"residency {residency!r} not in {RESIDENCIES}")
    layers = layers or {}
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    plan = {}
    for modality, cache in opened.items():
        positions = _positions(cache.manifest, layers.get(modality))
        widths = [cache.manifest["encoder"]["layer_widths"][p] for p in positions]
        plan[modality] = (cache, positions, widths)
    total = sum(_selected_bytes(a, p, max(w)) for c, p, w in plan.values() for a in (c.values, c.scales))
    resident = residency == "device" or (residency == "auto" and _fits(total, target))
    log.info("feature store: %.1f MB, %s", total / 2**20, "device" if resident else "host")
    features, scales = {}, {}
    for modality, (cache, positions, widths) in plan.items():
        view = codec(cache.manifest["dtype"]).view  # bfloat16 / float8 bits are stored as uint16 / uint8
        features[modality] = _select(cache.values, positions, max(widths), copy=resident).view(view)
        if cache.scales is not None:
            scales[modality] = _select(cache.scales, positions, max(widths), copy=resident)
    store = FeatureStore(features, {m: w for m, (_, _, w) in plan.items()}, resident, scales)
    return store.to(target) if resident and device is not None else store


def load_feature_store(
    cache_dir: str | os.PathLike,
    encoders: dict[str, str],
    layers: dict[str, list[int] | None] | None = None,
    residency: str = "auto",
    fingerprint: str | Mapping[str, str] | None = None,
    device: str | torch.device | None = None,
    verify: str = DEFAULT_VERIFY,
    lock_wait_s: float | None = None,
    dtype: str | None = None,
) -> FeatureStore:
    """FeatureStore over the caches of ``encoders`` (modality -> encoder name).

    Args:
        layers: modality -> hidden-state entry indices to keep (None / absent = all cached).
        residency: ``auto`` | ``device`` | ``host`` (see module docstring).
        fingerprint: the inputs fingerprint each cache must have been built for
            (``recsys.cache.inputs.cache_inputs_fingerprint`` of the dataset's items):
            modality -> fingerprint, or one str for every modality; None = not checked.
        device: where a device-resident store goes (default: CUDA if available, else CPU
            for the ``auto`` decision, and the store is left on the CPU).
        verify: ``checksum`` (default: hash each array once, a full read) | ``size``.
        lock_wait_s: how long to wait for a build of a cache in progress (None: as long as
            it takes).
        dtype: the ``cache.dtype`` every cache must have (None: any; each is read as its
            manifest says).
    Returns: FeatureStore with per modality [N+1, L_sel, max selected width] in the cache's
    storage (float16 by default; ``gather`` returns floats).
    """
    opened = open_caches(cache_dir, encoders, fingerprint, verify, lock_wait_s, dtype)
    return feature_store(opened, layers, residency, device)
