"""Atomic file output: write to a temp file beside the target, then ``os.replace`` it.

A killed job never leaves half a file behind: readers (a report regenerated while a sweep
runs, a resumed job) see the old content or the new one.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temp path (same directory and suffix as ``path``) for the body to
    write; on success it replaces ``path``, if the body raises it is removed.

    The body creates the file itself, so it gets the usual permissions (umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented, key-sorted JSON to ``path`` atomically.

    Non-JSON scalars that convert to float (numpy and 0-dim torch numbers) are written as
    floats; anything else raises TypeError before the target is touched.
    """
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=float))
