"""One process at a time, across processes: an exclusive `flock` on a file. The kernel drops the lock when its
process dies, however it dies, so a lock found free means nobody is doing the work."""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def exclusive_lock(path: Path, wait: bool = False) -> Iterator[bool]:
    """Hold the lock on `path` (created, with its folder, if missing) for the block: yields True when held,
    False when another process holds it and `wait` is false."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
