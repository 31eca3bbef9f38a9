"""Build a hidden-state cache: run a frozen encoder once over every item.

``build_cache(encoder, records, fingerprint, cache_dir)`` writes ``<name>.npy`` (float16, or
float32 with ``dtype="float32"``: [N+1, L, D_max], row 0 = zeros, row i = item i) and
``<name>.json`` (see manifest.py; the other dtypes are conversions of the float16 cache:
recsys/cache/convert.py);
``fingerprint`` is the inputs fingerprint of the records as the encoder reads them
(``recsys.cache.inputs.cache_inputs_fingerprint``, what ``recsys-cache`` passes):

- reused without recomputation when a complete cache with the same identifying manifest
  fields exists and its array matches the manifest's checksum (``verify``: see
  recsys/cache/integrity.py); on a difference: ``on_mismatch="rebuild"`` rebuilds,
  ``"refuse"`` raises CacheMismatchError naming every differing field. A broken cache (an
  empty, truncated or field-missing manifest, a missing, truncated or replaced array) is
  rebuilt with a warning naming the file and what is wrong, or refused the same way;
- one builder at a time: the whole check-and-build holds ``<name>.lock``; a second process
  building the same cache waits (up to ``lock_wait_s``, None = as long as it takes, then
  ``recsys.locking.LockedError``), then finds the finished cache and reuses it;
- resumable: rows go to ``<name>.npy.partial`` (an open_memmap), and after each flushed
  batch ``<name>.progress.json`` records the rows done (atomic rename). A rerun after a
  kill continues from there with the same batches, so the result is byte-identical to an
  uninterrupted build; the finished file is hashed (one read of it) and renamed into place,
  then the manifest written;
- eval mode, no grad, batched, bf16/fp16 autocast on CUDA only (``cache.amp``; the precision
  is part of the manifest key, so a float32 cache is never taken for a bf16 one), tqdm
  progress bar; the build time and items/s are recorded in the manifest.

Example:
    >>> records = items.to_dicts()
    >>> fingerprint = cache_inputs_fingerprint(encoder.identity(), records, "stat")
    >>> manifest = build_cache(encoder, records, fingerprint, "cache/ml")
    >>> manifest["shape"], manifest["build"]["items_per_second"]
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from recsys.atomic_io import write_json_atomic
from recsys.cache.codecs import codec
from recsys.cache.integrity import (
    DEFAULT_VERIFY,
    array_checksum,
    open_arrays,
    previous_manifest,
    read_manifest,
)
from recsys.cache.manifest import (
    CacheMismatchError,
    CachePaths,
    manifest_diff,
    manifest_key,
    read_json,
    replacing,
)
from recsys.encoders.base import FrozenEncoder
from recsys.locking import exclusive

log = logging.getLogger(__name__)

ON_MISMATCH = ("rebuild", "refuse")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype encoders run in: bf16/fp16 on CUDA, None (float32) elsewhere."""
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp {amp!r} not in {sorted(AMP_DTYPES)}")
    return AMP_DTYPES[amp] if device.type == "cuda" else None


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _check_records(records: list[dict[str, Any]]) -> None:
    ids = [r.get("item_id") for r in records]
    if any(i is not None for i in ids) and ids != list(range(1, len(records) + 1)):
        raise ValueError("records must be items 1..N in item_id order (row i = item i)")


def _read_progress(paths: CachePaths) -> dict[str, Any] | None:
    """The progress record of an interrupted build; None when absent or unreadable."""
    try:
        return read_json(paths.progress)
    except ValueError:
        log.warning("ignoring unreadable progress file %s: starting the build afresh", paths.progress)
        return None


def _open_partial(
    paths: CachePaths, key: dict[str, Any], shape: tuple[int, ...], dtype: str
) -> tuple[np.memmap, dict[str, Any]]:
    """The partial array and its progress record: resumed when both belong to this ``key``,
    else started afresh (row 0 and everything else zero)."""
    progress = _read_progress(paths)
    if progress is not None and progress.get("key") == key and paths.partial.exists():
        try:
            array = np.lib.format.open_memmap(paths.partial, mode="r+")
        except (ValueError, OSError) as err:
            log.warning("ignoring unreadable %s (%s): starting the build afresh", paths.partial, err)
        else:
            if array.shape == shape and array.dtype == np.dtype(dtype):
                log.info("resuming %s at item %d/%d", paths.partial, progress["done"], shape[0] - 1)
                return array, progress
            del array
    paths.progress.unlink(missing_ok=True)
    array = np.lib.format.open_memmap(paths.partial, mode="w+", dtype=dtype, shape=shape)
    array[0] = 0
    progress = {"key": key, "done": 0, "seconds": 0.0, "missing": 0, "failed": 0}
    return array, progress


def reusable(paths: CachePaths, key: dict[str, Any], on_mismatch: str, verify: str) -> dict[str, Any] | None:
    """The manifest of an intact cache at ``paths`` built for ``key``; None when it must be
    (re)built; CacheMismatchError under ``on_mismatch="refuse"`` when it differs or is broken."""
    try:
        found = read_manifest(paths)
        diff = [] if found is None else manifest_diff(found, key)
        if found is not None and not diff:
            open_arrays(paths, found, verify)  # the arrays are what the manifest says
    except CacheMismatchError as err:  # broken: manifest unreadable, array truncated or replaced
        if on_mismatch == "refuse":
            raise CacheMismatchError(
                f"{err} (cache.on_mismatch=refuse; cache.on_mismatch=rebuild rebuilds it)"
            ) from None
        log.warning("rebuilding cache %s: %s", paths.features, err)
        return None
    if found is None or not diff:
        return found
    detail = "\n  ".join(diff)
    if on_mismatch == "refuse":
        raise CacheMismatchError(
            f"cache {paths.features} was built differently (cache.on_mismatch=refuse):\n  {detail}"
        )
    log.warning("rebuilding cache %s, its manifest differs:\n  %s", paths.features, detail)
    return None


def _encode_all(
    encoder: FrozenEncoder,
    records: list[dict[str, Any]],
    paths: CachePaths,
    key: dict[str, Any],
    device: torch.device,
    precision: torch.dtype | None,
    progress_bar: bool,
) -> dict[str, Any]:
    """Fill ``<name>.npy.partial`` batch by batch (resuming a killed build), hash it and
    rename it into place; returns the final progress record plus ``checksum``."""
    n, dtype = len(records), key["dtype"]
    encoder.to(device).eval()
    array, progress = _open_partial(paths, key, tuple(key["shape"]), dtype)
    bar = tqdm(total=n, initial=progress["done"], unit="item", desc=encoder.name, disable=not progress_bar)
    with bar, torch.no_grad(), _autocast(device, precision):
        for start in range(progress["done"], n, encoder.batch_size):
            tic = time.perf_counter()
            chunk = records[start : start + encoder.batch_size]
            batch = encoder.preprocess(chunk)
            features = encoder.encode(batch).to("cpu", torch.float32)
            array[start + 1 : start + 1 + len(chunk)] = features.numpy().astype(dtype)
            array.flush()
            progress["done"] = start + len(chunk)
            progress["seconds"] += time.perf_counter() - tic
            progress["missing"] += int(batch.get("missing", 0))
            progress["failed"] += int(batch.get("failed", 0))
            write_json_atomic(paths.progress, progress)
            bar.update(len(chunk))
    del array
    checksum = array_checksum(paths.partial)
    os.replace(paths.partial, paths.features)
    return {**progress, "checksum": checksum}


def build_cache(
    encoder: FrozenEncoder,
    records: list[dict[str, Any]],
    fingerprint: str,
    cache_dir: str | os.PathLike,
    dtype: str = "float16",
    on_mismatch: str = "rebuild",
    amp: str = "bf16",
    device: str | torch.device | None = None,
    progress_bar: bool = True,
    verify: str = DEFAULT_VERIFY,
    lock_wait_s: float | None = None,
) -> dict[str, Any]:
    """Cache ``encoder``'s features of ``records`` (items 1..N in order) in ``cache_dir``;
    ``fingerprint`` is their inputs fingerprint (module docstring).

    Returns the manifest (its ``build`` entry has ``reused: True`` when nothing was computed).
    Raises CacheMismatchError when a different or broken cache exists and
    ``on_mismatch="refuse"``; LockedError when another build of this cache still runs after
    ``lock_wait_s`` seconds; ValueError for a ``dtype`` an encoder does not write (float16 and
    float32 only: ``convert_cache`` makes the others).
    """
    if on_mismatch not in ON_MISMATCH:
        raise ValueError(f"on_mismatch {on_mismatch!r} not in {ON_MISMATCH}")
    if not codec(dtype).encoded:
        raise ValueError(f"an encoder writes float16 or float32 caches; {dtype} is converted from "
                         "float16 (recsys.cache.convert.convert_cache)")
    _check_records(records)
    paths = CachePaths.of(cache_dir, encoder.name)
    paths.features.parent.mkdir(parents=True, exist_ok=True)
    n = len(records)
    shape = (n + 1, len(encoder.layer_widths), max(encoder.layer_widths))
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = autocast_dtype(device, amp)  # features differ with it: part of the cache's identity
    autocast = None if precision is None else str(precision).removeprefix("torch.")
    key = manifest_key(encoder.identity(), fingerprint, shape, dtype, autocast)

    with exclusive(paths.lock, f"cache {paths.features}", lock_wait_s):
        previous = previous_manifest(paths)
        found = reusable(paths, key, on_mismatch, verify)
        if found is not None:
            log.info("reusing cache %s (manifest and checksum match, nothing recomputed)", paths.features)
            return {**found, "build": {**found["build"], "reused": True}}
        progress = _encode_all(encoder, records, paths, key, device, precision, progress_bar)
        seconds = progress["seconds"]
        manifest = {
            **key,
            "complete": True,
            "checksum": progress["checksum"],
            "storage": codec(dtype).storage(shape),
            "build": {
                "seconds": round(seconds, 3),
                "items_per_second": round(n / seconds, 2) if seconds > 0 else None,
                "device": str(device),
                "missing": progress["missing"],
                "failed": progress["failed"],
            },
        }
        manifest = replacing(manifest, previous)
        write_json_atomic(paths.manifest, manifest)
        paths.progress.unlink()
    log.info("built %s %s in %.1f s (%.1f items/s)", paths.features, shape, seconds, n / max(seconds, 1e-9))
    return {**manifest, "build": {**manifest["build"], "reused": False}}
