"""Cache manifest: what a cached feature array depends on, and where its files live.

Per encoder, in ``cache_dir``: ``<name>.npy`` ([N+1, L, D_max] in the storage of its dtype,
recsys/cache/codecs.py), for int8 ``<name>.scales.npy`` (float32, broadcast against it), and
``<name>.json``:

    {"format": 3, "encoder": <FrozenEncoder.identity()>, "dtype": "float16",
     "shape": [N+1, L, D_max], "inputs_fingerprint": "<sha256>",
     "autocast": "bfloat16" | "float16" | null (the precision the encoder ran in: CUDA
                 autocast, or null = float32, always on CPU), "complete": true,
     "checksum": {"sha256": "<sha256 of the .npy file>", "bytes": <its size>,
                  "scales": {"sha256": ..., "bytes": ...} (int8 only: <name>.scales.npy)},
     "storage": {"values": "int8", "view": "int8", "scales": {"granularity": "channel",
                 "dtype": "float32", "shape": [1, L, D_max], "decode": "values * scales"}}
                (how to read the .npy back: ``Codec.storage``; absent in caches written before
                 it, all float16 or float32),
     "build": {"seconds": s, "items_per_second": r, "device": "cpu", "missing": m,
               "failed": f, "converted_from": {...} (a converted cache: recsys/cache/convert.py)},
     "same_features_as": ["<manifest_fingerprint>", ...] (absent when empty)}

Only the first six keys identify a cache (``KEY_FIELDS``): ``dtype`` tells the storage, so an
int8 cache is never taken for a float16 one; ``inputs_fingerprint`` covers exactly what the
encoder reads of the items (its record fields, and the media files they name:
recsys/cache/inputs.py), so a changed poster rebuilds the image cache and not the text cache.
``checksum`` is what the files must hash to (checked on reuse and at loading:
recsys/cache/integrity.py); ``complete`` and ``build`` are facts about one build.
``manifest_fingerprint`` digests the key and the checksum (the scales' included): what a
training run read. A rebuild that writes bit-identical arrays under another key (media files
re-laid out with new mtimes change the stat-based inputs fingerprint, not the features)
lists the fingerprints of the builds it replaced in ``same_features_as``
(``replacing``), so runs trained on them still resume and restore
(``known_fingerprints``): what they read is byte for byte on disk.

Where: the float16 caches of a dataset in its cache directory (``cache.dir``, by default
``${paths.data_dir}/cache/${data.name}``), every other dtype in ``<that>/<dtype>/``
(``dtype_dir``, the ``${cache_dir:...}`` resolver of conf/cache/default.yaml), so caches of
several dtypes coexist and a run reads the one of its ``cache.dtype``; a converted dtype's
source is the float16 cache of the parent directory (``source_dir``).

While building, ``<name>.npy.partial`` (and ``<name>.scales.npy.partial``) and
``<name>.progress.json`` exist; ``<name>.lock`` (an OS lock, recsys/locking.py) admits one
builder at a time and stays behind, empty. JSON files are always written atomically (temp
file + rename).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.cache.codecs import SOURCE_DTYPE
from recsys.config.differences import differences
from recsys.errors import Refused

FORMAT = 3
KEY_FIELDS = ("format", "encoder", "dtype", "shape", "inputs_fingerprint", "autocast")
#: What the arrays hold and how they were made: equal in two manifests = the same features.
FEATURES_FIELDS = ("format", "encoder", "dtype", "shape", "autocast", "checksum")


class CacheMismatchError(Refused):
    """A cache exists but does not match what was asked for (or is unusable)."""


@dataclass(frozen=True)
class CachePaths:
    """The files of one encoder's cache in ``cache_dir``."""

    features: Path
    scales: Path
    manifest: Path
    partial: Path
    scales_partial: Path
    progress: Path
    lock: Path

    @classmethod
    def of(cls, cache_dir: str | os.PathLike, name: str) -> CachePaths:
        root = Path(cache_dir)
        return cls(
            features=root / f"{name}.npy",
            scales=root / f"{name}.scales.npy",
            manifest=root / f"{name}.json",
            partial=root / f"{name}.npy.partial",
            scales_partial=root / f"{name}.scales.npy.partial",
            progress=root / f"{name}.progress.json",
            lock=root / f"{name}.lock",
        )


def dtype_dir(float16_dir: str | os.PathLike, dtype: str) -> str:
    """The directory of the ``dtype`` caches beside float16 ones in ``float16_dir``: itself
    for float16, else ``<float16_dir>/<dtype>``."""
    return str(float16_dir) if dtype == SOURCE_DTYPE else os.path.join(float16_dir, dtype)


def source_dir(cache_dir: str | os.PathLike, dtype: str) -> Path:
    """The float16 cache directory a converted ``dtype`` cache in ``cache_dir`` is made from:
    its parent. ValueError unless ``cache_dir`` is named after ``dtype`` (``dtype_dir``)."""
    path = Path(cache_dir)
    if path.name != dtype:
        raise ValueError(
            f"{dtype} caches are converted from the float16 cache of their parent directory, so "
            f"their directory must be <float16 cache dir>/{dtype}, not {str(cache_dir)!r}"
        )
    return path.parent


def manifest_key(
    identity: dict[str, Any],
    fingerprint: str,
    shape: tuple[int, ...],
    dtype: str,
    autocast: str | None = None,
) -> dict[str, Any]:
    """The identifying part of a manifest (JSON-normalised, so it compares with a read one);
    ``fingerprint`` is the inputs fingerprint (``recsys.cache.inputs``)."""
    key = {
        "format": FORMAT,
        "encoder": identity,
        "dtype": dtype,
        "shape": list(shape),
        "inputs_fingerprint": fingerprint,
        "autocast": autocast,
    }
    return json.loads(json.dumps(key))


def manifest_diff(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Human-readable differences of the identifying fields, e.g.
    ``["encoder.pooling: cached 'cls', wanted 'mean'"]`` (empty = match)."""
    return differences({k: found.get(k) for k in KEY_FIELDS}, {k: wanted.get(k) for k in KEY_FIELDS},
                       labels=("cached", "wanted"))


def manifest_fingerprint(manifest: dict[str, Any]) -> str:
    """sha256 hex digest of a complete manifest's identifying fields and its array checksum:
    the same for two caches exactly when they hold the same features built the same way.
    Raises ValueError naming the fields a manifest lacks."""
    fields = (*KEY_FIELDS, "checksum")
    missing = [f for f in fields if f not in manifest]
    if missing:
        raise ValueError(f"manifest lacks {missing}: not a complete format-{FORMAT} cache manifest")
    payload = json.dumps({f: manifest[f] for f in fields}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def known_fingerprints(manifest: dict[str, Any]) -> set[str]:
    """The fingerprints a run that read this cache may have recorded: its own and those of the
    earlier builds of the same features it replaced (``same_features_as``)."""
    return {manifest_fingerprint(manifest), *manifest.get("same_features_as", ())}


def replacing(manifest: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """``manifest`` of a build that replaces the cache ``previous`` described (a complete
    manifest, or None), with ``same_features_as``: ``previous``'s known fingerprints when
    both hold the same features (``FEATURES_FIELDS``, the arrays' checksums included)."""
    if previous is None or any(previous.get(f) != manifest.get(f) for f in FEATURES_FIELDS):
        return manifest
    earlier = sorted(known_fingerprints(previous) - {manifest_fingerprint(manifest)})
    return {**manifest, "same_features_as": earlier} if earlier else manifest


def source_fingerprint(manifest: dict[str, Any]) -> str:
    """The ``manifest_fingerprint`` of the cache whose features ``manifest``'s cache holds: for
    a converted cache its float16 source (``build.converted_from``), else its own. Two caches
    with the same source hold the same features in other storage (float16, int8, ...)."""
    converted_from = manifest.get("build", {}).get("converted_from")
    return converted_from["fingerprint"] if converted_from else manifest_fingerprint(manifest)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None if the file does not exist (a file that is not
    valid JSON raises ``json.JSONDecodeError``; recsys.cache.integrity reads manifests)."""
    if not path.exists():
        return None
    return json.loads(path.read_text())
