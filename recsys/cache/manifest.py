"""Cache manifest: what a cached feature array depends on, and where its files live.

Per encoder, in ``cache_dir``: ``<name>.npy`` (fp16 [N+1, L, D_max]) and ``<name>.json``:

    {"format": 3, "encoder": <FrozenEncoder.identity()>, "dtype": "float16",
     "shape": [N+1, L, D_max], "inputs_fingerprint": "<sha256>",
     "autocast": "bfloat16" | "float16" | null (the precision the encoder ran in: CUDA
                 autocast, or null = float32, always on CPU), "complete": true,
     "checksum": {"sha256": "<sha256 of the .npy file>", "bytes": <its size>},
     "build": {"seconds": s, "items_per_second": r, "device": "cpu", "missing": m,
               "failed": f}}

Only the first six keys identify a cache (``KEY_FIELDS``): ``inputs_fingerprint`` covers
exactly what the encoder reads of the items (its record fields, and the media files they
name: recsys/cache/inputs.py), so a changed poster rebuilds the image cache and not the text
cache. ``checksum`` is what the array must hash to (checked on reuse and at loading:
recsys/cache/integrity.py); ``complete`` and ``build`` are facts about one build.
``manifest_fingerprint`` digests the key and the checksum: what a training run read.

While building, ``<name>.npy.partial`` and ``<name>.progress.json`` exist; ``<name>.lock``
(an OS lock, recsys/locking.py) admits one builder at a time and stays behind, empty. JSON
files are always written atomically (temp file + rename).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.config.differences import differences
from recsys.errors import Refused

FORMAT = 3
KEY_FIELDS = ("format", "encoder", "dtype", "shape", "inputs_fingerprint", "autocast")


class CacheMismatchError(Refused):
    """A cache exists but does not match what was asked for (or is unusable)."""


@dataclass(frozen=True)
class CachePaths:
    """The files of one encoder's cache in ``cache_dir``."""

    features: Path
    manifest: Path
    partial: Path
    progress: Path
    lock: Path

    @classmethod
    def of(cls, cache_dir: str | os.PathLike, name: str) -> CachePaths:
        root = Path(cache_dir)
        return cls(
            features=root / f"{name}.npy",
            manifest=root / f"{name}.json",
            partial=root / f"{name}.npy.partial",
            progress=root / f"{name}.progress.json",
            lock=root / f"{name}.lock",
        )


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


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None if the file does not exist (a file that is not
    valid JSON raises ``json.JSONDecodeError``; recsys.cache.integrity reads manifests)."""
    if not path.exists():
        return None
    return json.loads(path.read_text())
