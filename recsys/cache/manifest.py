"""Cache manifest: what a cached feature array depends on, and where its files live.

Per encoder, in ``cache_dir``: ``<name>.npy`` (fp16 [N+1, L, D_max]) and ``<name>.json``:

    {"format": 2, "encoder": <FrozenEncoder.identity()>, "dtype": "float16",
     "shape": [N+1, L, D_max], "dataset_fingerprint": "<sha256>",
     "autocast": "bfloat16" | "float16" | null (the precision the encoder ran in: CUDA
                 autocast, or null = float32, always on CPU), "complete": true,
     "build": {"seconds": s, "items_per_second": r, "device": "cpu", "missing": m,
               "failed": f}}

Only the first six keys identify a cache (``KEY_FIELDS``); ``complete`` and ``build`` are
facts about one build. While building, ``<name>.npy.partial`` and ``<name>.progress.json``
exist; JSON files are always written atomically (temp file + rename).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = 2
KEY_FIELDS = ("format", "encoder", "dtype", "shape", "dataset_fingerprint", "autocast")


class CacheMismatchError(RuntimeError):
    """A cache exists but does not match what was asked for (or is unusable)."""


@dataclass(frozen=True)
class CachePaths:
    """The files of one encoder's cache in ``cache_dir``."""

    features: Path
    manifest: Path
    partial: Path
    progress: Path

    @classmethod
    def of(cls, cache_dir: str | os.PathLike, name: str) -> CachePaths:
        root = Path(cache_dir)
        return cls(
            features=root / f"{name}.npy",
            manifest=root / f"{name}.json",
            partial=root / f"{name}.npy.partial",
            progress=root / f"{name}.progress.json",
        )


def manifest_key(
    identity: dict[str, Any],
    fingerprint: str,
    shape: tuple[int, ...],
    dtype: str,
    autocast: str | None = None,
) -> dict[str, Any]:
    """The identifying part of a manifest (JSON-normalised, so it compares with a read one)."""
    key = {
        "format": FORMAT,
        "encoder": identity,
        "dtype": dtype,
        "shape": list(shape),
        "dataset_fingerprint": fingerprint,
        "autocast": autocast,
    }
    return json.loads(json.dumps(key))


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for k, v in value.items():
            flat.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return flat
    return {prefix: value}


def manifest_diff(found: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Human-readable differences of the identifying fields, e.g.
    ``["encoder.pooling: cached 'cls', wanted 'mean'"]`` (empty = match)."""
    old = _flatten({k: found.get(k) for k in KEY_FIELDS}, "")
    new = _flatten({k: wanted.get(k) for k in KEY_FIELDS}, "")

    def show(flat: dict[str, Any], k: str) -> str:
        return repr(flat[k]) if k in flat else "<absent>"

    return [
        f"{k}: cached {show(old, k)}, wanted {show(new, k)}"
        for k in sorted(set(old) | set(new))
        if k not in old or k not in new or old[k] != new[k]
    ]


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None if the file does not exist."""
    if not path.exists():
        return None
    return json.loads(path.read_text())
