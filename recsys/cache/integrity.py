"""Is a finished cache intact? Read its manifest and check its array against it.

``read_manifest(paths)`` parses ``<name>.json`` and refuses (``CacheMismatchError`` naming the
file and what is wrong) one that is empty, truncated (not valid JSON), not an object, written
by another manifest format, lacking a field, or incomplete. ``open_array(paths, manifest,
verify)`` then checks ``<name>.npy``: present, of the size the manifest's checksum records,
of the recorded sha256 (``verify="checksum"``, the default: reads the whole file once, about
1.5 GB/s on one core; ``verify="size"`` skips that and only compares the size and the .npy
header), and with the manifest's shape and dtype; it returns a read-only memmap.

``current_cache_fingerprint`` gives ``manifest_fingerprint`` of the intact cache of an
encoder: the identity of the features a run trains on.

Example:
    >>> paths = CachePaths.of("data/cache/movielens", "minilm")
    >>> array = open_array(paths, read_manifest(paths))
    >>> current_cache_fingerprint("data/cache/movielens", "minilm")
    '5f2a...'
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, NonNegativeInt, ValidationError

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


class _Checksum(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    sha256: str
    bytes: NonNegativeInt


class _Manifest(BaseModel):
    """The fields of a format-``FORMAT`` manifest that loading and reuse read."""

    model_config = ConfigDict(extra="allow", strict=True)
    format: int
    encoder: _Identity
    dtype: str
    shape: list[int]
    inputs_fingerprint: str
    autocast: str | None
    complete: bool
    checksum: _Checksum
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


def open_array(paths: CachePaths, manifest: dict[str, Any], verify: str = DEFAULT_VERIFY) -> np.ndarray:
    """Read-only memmap [N+1, L, D_max] of the array ``manifest`` describes, once it is
    checked (see the module docstring for ``verify``); CacheMismatchError otherwise."""
    if verify not in VERIFY:
        raise ValueError(f"verify {verify!r} not in {VERIFY}")
    features, expected = paths.features, manifest["checksum"]
    if not features.exists():
        raise CacheMismatchError(
            f"cache array {features} is missing (its manifest {paths.manifest} is there)"
        )
    size = features.stat().st_size
    if size != expected["bytes"]:
        raise CacheMismatchError(
            f"cache array {features} has {size} bytes, its manifest {paths.manifest} records "
            f"{expected['bytes']} (truncated or replaced)"
        )
    if verify == "checksum" and (actual := file_sha256(features)) != expected["sha256"]:
        raise CacheMismatchError(
            f"cache array {features} does not match the checksum in {paths.manifest} (sha256 "
            f"{actual[:16]}... != {expected['sha256'][:16]}...): it was replaced or corrupted"
        )
    try:
        array = np.load(features, mmap_mode="r")
    except (ValueError, OSError) as err:
        raise CacheMismatchError(f"cache array {features} is not a readable .npy file ({err})") from None
    if list(array.shape) != manifest["shape"] or str(array.dtype) != manifest["dtype"]:
        raise CacheMismatchError(
            f"{features} is {array.dtype}{list(array.shape)}, its manifest says "
            f"{manifest['dtype']}{manifest['shape']}"
        )
    return array


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
        open_array(paths, manifest, verify)
    return manifest_fingerprint(manifest)
