"""Faults of what the service stands on, as errors a client can retry: the database down, restarting or busy
(`database_unavailable`), the disk full (`storage_full`). Each is a 503 with a Retry-After, so a phone in the
field tries again instead of giving up, and the server's log has the cause. Anything else is a bug (500)."""

from __future__ import annotations

import errno

from sqlalchemy import exc as sql

from identify.errors import IdentifyError

DATABASE_RETRY_SECONDS = 5  # a restarted backend, a failover, a lock held a little long
STORAGE_RETRY_SECONDS = 60  # someone must free space
FULL = (errno.ENOSPC, errno.EDQUOT)


def database_unavailable(detail: str = "") -> IdentifyError:
    return IdentifyError("database_unavailable", "the database is unavailable for a moment; nothing was stored, "
                         "try again" + (f" ({detail})" if detail else ""), 503, DATABASE_RETRY_SECONDS)


def storage_full() -> IdentifyError:
    return IdentifyError("storage_full", "the server's disk is full; nothing was stored, try again later", 503,
                         STORAGE_RETRY_SECONDS)


def fault_of(exc: BaseException) -> IdentifyError | None:
    """The retryable error `exc` stands for, or None when it is not a fault of the database or the disk."""
    if isinstance(exc, OSError) and exc.errno in FULL:
        return storage_full()
    if isinstance(exc, sql.OperationalError) and _disk_full(exc.orig):
        return storage_full()
    if isinstance(exc, (sql.OperationalError, sql.InterfaceError, sql.TimeoutError)):
        return database_unavailable()
    if isinstance(exc, sql.DBAPIError) and exc.connection_invalidated:
        return database_unavailable()
    return None


def _disk_full(orig: BaseException | None) -> bool:
    """PostgreSQL's disk_full (SQLSTATE 53100), SQLite's SQLITE_FULL."""
    return getattr(orig, "sqlstate", None) == "53100" or "database or disk is full" in str(orig)
