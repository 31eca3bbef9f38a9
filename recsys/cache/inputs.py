"""The inputs fingerprint of a cache: exactly what its encoder reads of the items.

A cache is rebuilt when its inputs change, and only then: the item record fields the
encoder's ``preprocess`` reads (``encoder_fields``: the ``field`` its ``preprocessing()``
declares, ``title`` for text encoders, ``image_path`` for image encoders, ...; an encoder
that declares none reads every field) and, for the media path fields (``MEDIA_FIELDS``),
the file each path names, fingerprinted by its stat or its content
(``data.media_fingerprint``, recsys/cache/file_fingerprint.py). A replaced poster then
rebuilds the image cache and not the text cache; a changed title the text cache and not the
image cache.

Example:
    >>> inputs_fingerprint(items.to_dicts(), ("image_path",), "stat")
    'c0ffee...'   # sha256 hex
    >>> cache_inputs_fingerprint(encoder.identity(), items.to_dicts(), "stat")  # the same
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from recsys.cache.file_fingerprint import file_fingerprint

#: Record fields holding the path of a media file: the file itself enters the fingerprint.
MEDIA_FIELDS = ("image_path", "video_path", "audio_path")


def inputs_fingerprint(records: Sequence[dict[str, Any]], fields: Sequence[str] | None, how: str) -> str:
    """sha256 hex digest over, item by item in order, the values of ``fields`` (None: every
    field of the record) and the ``file_fingerprint(path, how)`` of each media path among
    them (so ``how`` changes only the fingerprints of caches that read media). Costs one
    ``stat`` per media file (``how="stat"``) or a read of every media file
    (``how="content"``)."""
    digest = hashlib.sha256(json.dumps({"fields": fields}).encode("utf-8"))
    for record in records:
        names = sorted(record) if fields is None else fields
        row = {name: record.get(name) for name in names}
        media = {
            name: file_fingerprint(row[name], how)
            for name in names
            if name in MEDIA_FIELDS and row[name] is not None
        }
        digest.update(json.dumps([row, media], sort_keys=True, default=str).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def encoder_fields(identity: dict[str, Any]) -> tuple[str, ...] | None:
    """The record fields the encoder of ``identity`` (``FrozenEncoder.identity()``, as in a
    cache manifest) reads: its preprocessing's ``field``; None (every field) without one."""
    field = (identity.get("preprocessing") or {}).get("field")
    return None if field is None else (field,)


def cache_inputs_fingerprint(identity: dict[str, Any], records: Sequence[dict[str, Any]], how: str) -> str:
    """The inputs fingerprint of a cache of the encoder of ``identity`` over ``records``."""
    return inputs_fingerprint(records, encoder_fields(identity), how)
