"""One process at a time, across processes: an exclusive `flock` on a file; or many at once, none while someone
holds it exclusively: shared `flock`s. The kernel drops a lock when its process dies, however it dies, so a lock
found free means nobody is doing the work. Each call opens the file anew, so threads of one process exclude each
other as processes do (a flock belongs to an open file, not to a process)."""

from __future__ import annotations

import contextlib
import fcntl
from pathlib import Path
from typing import Iterable, Iterator


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


@contextlib.contextmanager
def shared_locks(paths: Iterable[Path]) -> Iterator[None]:
    """Hold a shared lock on each of `paths` (created if missing) for the block, taken in sorted order; waits
    while another holds one of them exclusively."""
    with contextlib.ExitStack() as stack:
        for path in sorted(set(paths)):
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = stack.enter_context(open(path, "a+"))
            fcntl.flock(handle, fcntl.LOCK_SH)
        yield
