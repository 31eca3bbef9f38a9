"""Atomic output, for files and directories alike: build beside the target, then swap.

``atomic_path(target)`` yields a fresh temporary path in the target's directory (same file
system); the body writes a file there, or creates a directory and fills it. When the body
succeeds the temporary replaces the target in one step, and when it raises the temporary is
removed and the target is untouched. Readers (a report regenerated while a sweep runs, a
server loading an export, a resumed job) see the old content or the new one, never a part.

- a file: ``os.replace``;
- a directory onto an existing one: the two are exchanged with Linux's
  ``renameat2(RENAME_EXCHANGE)`` (one atomic step; Python has no binding for it, hence the
  few ctypes lines), then the old one is deleted. Where the kernel or file system lacks it,
  the old directory is renamed aside first: a reader may then briefly find no directory, but
  never a partial one, and a crash leaves the old one in ``.<name>.old-*``.

Example:
    >>> write_json_atomic("outputs/run/results.json", {"status": "complete"})
    >>> with atomic_path("outputs/run/export") as tmp:
    ...     tmp.mkdir()
    ...     (tmp / "export.json").write_text("{}")
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap paths ``a`` and ``b`` atomically (Linux ``renameat2``); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _replace(new: Path, target: Path) -> None:
    """Put ``new`` (a file or a directory) at ``target``, in one step where possible."""
    if not (new.is_dir() and target.exists()):
        os.replace(new, target)
    elif _exchange(new, target):
        _remove(new)  # now the old content
    else:
        retired = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, retired)
        os.replace(new, target)
        _remove(retired)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temp path beside ``path`` (same suffix) for the body to write a file or
    create a directory at; on success it replaces ``path``, if the body raises it is removed.

    The body creates the file or directory itself, so it gets the usual permissions (umask).
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield tmp
        _replace(tmp, path)
    except BaseException:
        _remove(tmp)
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
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=float) + "\n")
