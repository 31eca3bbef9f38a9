"""Atomic file writes: a temp file in the target's directory, fsync, then os.replace.

A killed job never leaves half a file behind: readers see the old content or the new one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results and manifests are shared files
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented, key-sorted JSON to ``path`` atomically.

    Non-JSON scalars that convert to float (numpy and 0-dim torch numbers) are written as
    floats; anything else raises TypeError before the target is touched.
    """
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=float))
