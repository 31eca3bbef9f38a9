"""Convert a float16 cache to another dtype, without running its encoder again.

``convert_cache(source_dir, name, dtype)`` reads the float16 cache of encoder ``name`` in
``source_dir`` (checked against its checksum) and writes its ``dtype`` form
(``bfloat16``, ``int8``, ``int8_item_layer``, ``float8_e4m3``: recsys/cache/codecs.py) into
``target_dir`` (default ``<source_dir>/<dtype>``, where ``cache.dir`` puts it). This is how
``recsys-cache cache.dtype=int8`` (and ``recsys-train`` with ``prepare=true``) makes every
non-float cache: it builds or reuses the float16 cache, then converts it; the float16 cache
stays, the source of every other dtype.

- identity: the source's manifest key with ``dtype`` replaced (same encoder, inputs, shape,
  autocast), so a converted cache is reused, checked and fingerprinted like a built one, and
  is converted again when its source was rebuilt for other inputs; ``build.converted_from``
  names the source (``dtype``, ``fingerprint``: its ``manifest_fingerprint``) and the
  conversion's ``seconds``, and ``build.seconds`` is the encoding plus the conversion;
- reused when an intact cache of that key is there, else (re)converted, or refused under
  ``on_mismatch="refuse"`` (as ``build_cache``);
- chunked: ``chunk_rows`` items at a time (default: ``CHUNK_VALUES`` values), so memory holds
  a chunk, not the cache; int8 reads the source twice (scales, then values), the others once;
- atomic: values go to ``<name>.npy.partial`` and int8 scales to ``<name>.scales.npy.partial``;
  once complete they are hashed and renamed into place, then the manifest is written (the
  last step: until then the target reads as absent or broken, never as a half file). A killed
  conversion is not resumed: the next one overwrites the partial files (seconds per GB);
- locks: the target's ``<name>.lock``, then the source's, so the source is not rebuilt
  while it is read.

Example:
    >>> convert_cache("data/cache/movielens", "minilm", "int8")["dtype"]
    'int8'                                  # data/cache/movielens/int8/minilm.{npy,scales.npy,json}
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import numpy as np

from recsys.atomic_io import write_json_atomic
from recsys.cache.build import ON_MISMATCH, reusable
from recsys.cache.codecs import SOURCE_DTYPE, Codec, codec
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
    dtype_dir,
    manifest_fingerprint,
    manifest_key,
    replacing,
)
from recsys.locking import exclusive

log = logging.getLogger(__name__)

#: Values per chunk (float32 while converted: 64 MB), whatever the width of the items.
CHUNK_VALUES = 1 << 24


def _source(paths: CachePaths, verify: str) -> tuple[dict[str, Any], np.ndarray]:
    """The manifest and values of the intact float16 cache at ``paths``."""
    manifest = read_manifest(paths)
    if manifest is None:
        raise FileNotFoundError(f"no float16 cache {paths.manifest} to convert: run recsys-cache")
    if manifest["dtype"] != SOURCE_DTYPE:
        raise CacheMismatchError(f"{paths.features} is a {manifest['dtype']} cache: only {SOURCE_DTYPE} "
                                 "caches are converted")
    values, _ = open_arrays(paths, manifest, verify)
    return manifest, values


def _chunks(n: int, chunk_rows: int) -> list[slice]:
    return [slice(start, min(start + chunk_rows, n)) for start in range(0, n, chunk_rows)]


def _scales(target: Codec, source: np.ndarray, chunks: list[slice]) -> np.ndarray | None:
    """The int8 scales of the whole ``source`` [N+1, L, D] (one pass); None for other dtypes."""
    if target.scale is None:
        return None
    parts = [target.chunk_scales(source[rows]) for rows in chunks]
    return np.maximum.reduce(parts) if target.scale == "channel" else np.concatenate(parts)


def _write(target: Codec, source: np.ndarray, paths: CachePaths, chunk_rows: int | None) -> dict[str, Any]:
    """Write the converted values (and scales) to the partial files, chunk by chunk, and
    rename them into place; returns their checksum record."""
    n, layers, width = source.shape
    chunks = _chunks(n, chunk_rows or max(1, CHUNK_VALUES // (layers * width)))
    scales = _scales(target, source, chunks)
    per_item = scales is not None and scales.shape[0] > 1
    values = np.lib.format.open_memmap(paths.partial, mode="w+", dtype=target.stored, shape=source.shape)
    for rows in chunks:
        values[rows] = target.encode(source[rows], scales[rows] if per_item else scales)
    values.flush()
    del values
    checksum = array_checksum(paths.partial)
    if scales is None:
        paths.scales.unlink(missing_ok=True)  # of an int8 cache this one replaces
    else:
        with open(paths.scales_partial, "wb") as file:  # given a path, np.save appends ".npy"
            np.save(file, scales, allow_pickle=False)
        checksum["scales"] = array_checksum(paths.scales_partial)
        os.replace(paths.scales_partial, paths.scales)
    os.replace(paths.partial, paths.features)
    return checksum


def convert_cache(
    source_dir: str | os.PathLike,
    name: str,
    dtype: str,
    target_dir: str | os.PathLike | None = None,
    on_mismatch: str = "rebuild",
    verify: str = DEFAULT_VERIFY,
    lock_wait_s: float | None = None,
    chunk_rows: int | None = None,
) -> dict[str, Any]:
    """The ``dtype`` cache of encoder ``name`` converted from its float16 cache in
    ``source_dir`` (module docstring), in ``target_dir`` (default ``<source_dir>/<dtype>``).

    Returns the manifest (``build.reused: True`` when it was there already). Raises
    FileNotFoundError without a source cache; CacheMismatchError when the source is broken or
    not float16, or a different or broken target exists under ``on_mismatch="refuse"``;
    ValueError for a ``dtype`` that is not converted (float16, float32: ``build_cache``).
    """
    target = codec(dtype)
    if target.encoded:
        raise ValueError(f"{dtype} caches are written by the encoder (build_cache), not converted")
    if on_mismatch not in ON_MISMATCH:
        raise ValueError(f"on_mismatch {on_mismatch!r} not in {ON_MISMATCH}")
    source_paths = CachePaths.of(source_dir, name)
    paths = CachePaths.of(target_dir if target_dir is not None else dtype_dir(source_dir, dtype), name)
    paths.features.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(paths.lock, f"cache {paths.features}", lock_wait_s), \
            exclusive(source_paths.lock, f"cache {source_paths.features}", lock_wait_s):
        source, values = _source(source_paths, verify)
        key = manifest_key(source["encoder"], source["inputs_fingerprint"], source["shape"], dtype,
                           source["autocast"])
        previous = previous_manifest(paths)
        found = reusable(paths, key, on_mismatch, verify)
        if found is not None:
            log.info("reusing cache %s (manifest and checksum match, nothing converted)", paths.features)
            return {**found, "build": {**found["build"], "reused": True}}
        tic = time.perf_counter()
        checksum = _write(target, values, paths, chunk_rows)
        seconds = time.perf_counter() - tic
        built = source["build"]
        total = float(built["seconds"]) + seconds
        manifest = {
            **key,
            "complete": True,
            "checksum": checksum,
            "storage": target.storage(source["shape"]),
            "build": {
                "seconds": round(total, 3),
                "items_per_second": round((source["shape"][0] - 1) / total, 2) if total > 0 else None,
                "device": built["device"],
                "missing": built["missing"],
                "failed": built["failed"],
                "converted_from": {"dtype": SOURCE_DTYPE, "fingerprint": manifest_fingerprint(source),
                                   "seconds": round(seconds, 3)},
            },
        }
        manifest = replacing(manifest, previous)
        write_json_atomic(paths.manifest, manifest)
    log.info("converted %s to %s %s in %.1f s", source_paths.features, dtype, paths.features, seconds)
    return {**manifest, "build": {**manifest["build"], "reused": False}}
