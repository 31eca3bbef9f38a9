"""One writer at a time: an exclusive lock on a run directory, a cache or a processed dataset.

``exclusive(lock_file, what, wait_s)`` holds an OS-level lock (``filelock``: ``flock`` on
POSIX) while its block runs. The kernel drops the lock when the holding process dies, however
it dies (SIGKILL included), so a lock is never stale; the empty lock file stays behind and is
harmless (it is reused by the next holder). A second process asking for the same lock waits up
to ``wait_s`` seconds (0: not at all; None: as long as it takes) and then gets a
``LockedError`` that names what is busy, the lock file, and what to do.

Example:
    >>> with exclusive(run_dir / ".lock", f"run directory {run_dir}"):
    ...     train()
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from recsys.errors import Refused

log = logging.getLogger(__name__)


class LockedError(Refused):
    """Another process holds the lock on what this one was about to write."""


@contextmanager
def exclusive(lock_file: str | os.PathLike, what: str, wait_s: float | None = 0) -> Iterator[None]:
    """Hold the lock ``lock_file`` for the block; ``what`` names the guarded thing in messages.

    Raises:
        LockedError: another process still holds it after ``wait_s`` seconds.
    """
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file, timeout=-1 if wait_s is None else wait_s)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if wait_s == 0:
            raise LockedError(
                f"{what} is being written by another process (lock {lock_file}); wait for it "
                "to finish, or use another directory"
            ) from None
        log.info("%s is being written by another process; waiting for it (lock %s)", what, lock_file)
        try:
            lock.acquire()
        except Timeout:
            raise LockedError(
                f"{what} was still being written by another process after {wait_s} s "
                f"(lock {lock_file}); wait for it to finish, or use another directory"
            ) from None
    try:
        yield
    finally:
        lock.release()
