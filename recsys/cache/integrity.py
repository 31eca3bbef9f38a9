"""Is a finished cache intact? Read its manifest and check its arrays against it.

``read_manifest(paths)`` parses ``<name>.json`` and refuses (``CacheMismatchError`` naming the
file and what is wrong) one that is empty, truncated (not valid JSON), not an object, written
by another manifest format, lacking a field, of an unknown dtype, or incomplete.
``open_arrays(paths, manifest, verify)`` then checks ``<name>.npy`` (and, for int8,
``<name>.scales.npy`` against ``checksum.scales``): present, of the size the manifest's
checksum records, of the recorded sha256 (``verify="checksum"``, the default: reads the whole
file once, about 1.5 GB/s on one core; ``verify="size"`` skips that and only compares the
size and the .npy header), and with the shape and numpy dtype of the manifest's storage
(recsys/cache/codecs.py); it returns read-only memmaps.

``current_cache_fingerprint`` gives ``manifest_fingerprint`` of the intact cache of an
encoder: the identity of the features a run trains on.

Example:
    >>> paths = CachePaths.of("data/cache/movielens", "minilm")
    >>> values, scales = open_arrays(paths, read_manifest(paths))
    >>> current_cache_fingerprint("data/cache/movielens", "minilm")
    '5f2a...'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, NonNegativeInt, ValidationError

from recsys.cache.codecs import CacheDtype, codec
from recsys.cache.file_fingerprint import file_sha256
from recsys.cache.manifest import FORMAT, CacheMismatchError, CachePaths, manifest_fingerprint
from recsys.locking import exclusive

VERIFY = ("checksum", "size")
DEFAULT_VERIFY = "checksum"


class _Identity(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    name: str
    modality: str
    layers: list[int]
    layer_widths: list[int]


class _FileChecksum(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    sha256: str
    bytes: NonNegativeInt


class _Checksum(_FileChecksum):
    scales: _FileChecksum | None = None


class _Manifest(BaseModel):
    """The fields of a format-``FORMAT`` manifest that loading and reuse read."""

    model_config = ConfigDict(extra="allow", strict=True)
    format: int
    encoder: _Identity
    dtype: CacheDtype
    shape: list[int]
    inputs_fingerprint: str
    autocast: str | None
    complete: bool
    checksum: _Checksum
    storage: dict[str, Any] | None = None
    build: dict[str, Any]


def array_checksum(path: str | os.PathLike) -> dict[str, Any]:
    """``{"sha256", "bytes"}`` of the file ``path`` (reads it whole)."""
    return {"sha256": file_sha256(path), "bytes": os.path.getsize(path)}


def _broken(path: os.PathLike, problem: str) -> CacheMismatchError:
    return CacheMismatchError(f"cache manifest {path} {problem}")


def read_manifest(paths: CachePaths) -> dict[str, Any] | None:
    """The manifest of the cache at ``paths``; None when there is no manifest file.

    Raises:
        CacheMismatchError: the manifest is empty, not valid JSON, not an object, of another
            format, lacks a field, or records an unfinished build (the message says which).
    """
    try:
        text = paths.manifest.read_bytes()
    except FileNotFoundError:
        return None
    if not text.strip():
        raise _broken(paths.manifest, "is empty")
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as err:
        raise _broken(paths.manifest, f"is not valid JSON ({err.msg} at line {err.lineno} "
                      f"column {err.colno}; truncated?)") from None
    except UnicodeDecodeError as err:
        raise _broken(paths.manifest, f"is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not isinstance(manifest, dict):
        raise _broken(paths.manifest, f"holds a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format") != FORMAT:
        raise _broken(paths.manifest, f"has format {manifest.get('format')!r}, this version of recsys "
                      f"reads format {FORMAT} (an older cache: rebuild it)")
    try:
        _Manifest.model_validate(manifest)
    except ValidationError as err:
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise _broken(paths.manifest, f"has missing or malformed fields ({fields})") from None
    if not manifest["complete"]:
        raise _broken(paths.manifest, "is incomplete (its build did not finish)")
    return manifest


def previous_manifest(paths: CachePaths) -> dict[str, Any] | None:
    """The manifest of the cache at ``paths`` that a build is about to replace: None when
    there is none or it is broken (``read_manifest`` refuses it)."""
    try:
        return read_manifest(paths)
    except CacheMismatchError:
        return None


def _checked(path: Path, expected: dict[str, Any], manifest: Path, verify: str) -> np.ndarray:
    """Read-only memmap of ``path`` once its size (and sha256, ``verify="checksum"``) are
    the ``expected`` ones; CacheMismatchError naming the file otherwise."""
    if not path.exists():
        raise CacheMismatchError(f"cache array {path} is missing (its manifest {manifest} is there)")
    size = path.stat().st_size
    if size != expected["bytes"]:
        raise CacheMismatchError(
            f"cache array {path} has {size} bytes, its manifest {manifest} records "
            f"{expected['bytes']} (truncated or replaced)"
        )
    if verify == "checksum" and (actual := file_sha256(path)) != expected["sha256"]:
        raise CacheMismatchError(
            f"cache array {path} does not match the checksum in {manifest} (sha256 "
            f"{actual[:16]}... != {expected['sha256'][:16]}...): it was replaced or corrupted"
        )
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError) as err:
        raise CacheMismatchError(f"cache array {path} is not a readable .npy file ({err})") from None


def _check_layout(path: Path, array: np.ndarray, shape: list[int] | None, dtype: str, what: str) -> None:
    if list(array.shape) != shape or str(array.dtype) != dtype:
        raise CacheMismatchError(f"{path} is {array.dtype}{list(array.shape)}, its manifest says {what} "
                                 f"are stored as {dtype}{shape}")


def open_arrays(
    paths: CachePaths, manifest: dict[str, Any], verify: str = DEFAULT_VERIFY
) -> tuple[np.ndarray, np.ndarray | None]:
    """Read-only memmaps of the values [N+1, L, D_max] and, for int8, the scales (float32,
    broadcast against the values; else None) that ``manifest`` describes, once they are
    checked (see the module docstring for ``verify``); CacheMismatchError otherwise."""
    if verify not in VERIFY:
        raise ValueError(f"verify {verify!r} not in {VERIFY}")
    stored = codec(manifest["dtype"])
    storage = stored.storage(manifest["shape"])
    if manifest.get("storage", storage) != storage:
        raise CacheMismatchError(f"cache manifest {paths.manifest} records storage {manifest['storage']}, "
                                 f"a {stored.name} cache is stored as {storage}")
    values = _checked(paths.features, manifest["checksum"], paths.manifest, verify)
    _check_layout(paths.features, values, manifest["shape"], stored.stored, f"{stored.name} features")
    if stored.scale is None:
        return values, None
    if manifest["checksum"].get("scales") is None:
        raise CacheMismatchError(f"cache manifest {paths.manifest} records no checksum of its int8 scales")
    scales = _checked(paths.scales, manifest["checksum"]["scales"], paths.manifest, verify)
    _check_layout(paths.scales, scales, stored.scales_shape(manifest["shape"]), "float32", "its scales")
    return values, scales


def current_cache_fingerprint(
    cache_dir: str | os.PathLike,
    encoder_name: str,
    verify: str = DEFAULT_VERIFY,
    lock_wait_s: float | None = None,
) -> str | None:
    """``manifest_fingerprint`` of encoder ``encoder_name``'s cache in ``cache_dir`` once its
    array is verified (waiting, up to ``lock_wait_s``, for a build in progress); None when
    there is no cache manifest. Raises CacheMismatchError when the cache is broken."""
    paths = CachePaths.of(cache_dir, encoder_name)
    if not paths.manifest.exists():
        return None
    with exclusive(paths.lock, f"cache {paths.features}", lock_wait_s):
        manifest = read_manifest(paths)
        if manifest is None:
            return None
        open_arrays(paths, manifest, verify)
    return manifest_fingerprint(manifest)
