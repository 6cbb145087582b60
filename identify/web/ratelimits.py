"""Rate limits (Flask-Limiter): failed logins, and the requests that cost a forward pass. The one owner of the
limiter's configuration, its keys and what /api/v1/status says of it."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse_many
from limits.errors import ConfigurationError
from limits.storage import MemoryStorage

from identify.config import ServiceConfig, redacted
from identify.errors import IdentifyError

log = logging.getLogger(__name__)
MEMORY = "memory://"  # counters in this process alone (the default; and the fallback when a storage cannot start)


def _login_name() -> str:
    return "login:" + request.form.get("name", "").strip().lower()[:200]


def _failed(response: Any) -> bool:
    return response.status_code == 401


UPLOADS = ("api.identify", "pages.upload_post", "api.similar_to_photo")  # each costs a forward pass: one bucket


def _storage_options(uri: str) -> dict[str, Any]:
    """Redis answers within half a second or counts as down: a blackholed host must not hang every request, and
    one that refuses is not asked again with backoff (redis-py 6 and later retry three times, up to 10 s apart,
    at every level: a sentinel's discovery nested in the master's connection took minutes per request). A
    sentinel deployment's sentinels are held to the same."""
    if not uri.startswith("redis"):
        return {}
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    quick = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5, "retry": Retry(NoBackoff(), 0)}
    return {**quick, "sentinel_kwargs": dict(quick)} if uri.split(":", 1)[0].endswith("+sentinel") else quick


def rate_limits(app: Flask, limits: ServiceConfig, data_dir: Path) -> Limiter:
    """Flask-Limiter, 429 with Retry-After: failed logins per address and per account, forward passes (uploads
    and similar-photo searches, API and page alike) per address. Counters live in `rate_limit_storage`: memory
    for one process, Redis when several workers must share them.

    When the storage cannot be reached the limiter fails open: it logs a warning, counts in this process's
    memory until the storage answers again (Flask-Limiter's in-memory fallback) and `/api/v1/status` says so;
    logins and uploads keep working.

    The per-account login limit cannot lock an owner out: it applies only to an address that has failed a login
    itself within the window, so ten wrong passwords from elsewhere stop guessing, not the owner typing the
    right one from their own address (OWASP's advice against account lockout)."""
    # Workers of one deployment share its data dir, and so their counters; another deployment on the same Redis
    # keeps its own.
    prefix = "identify-" + hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    limiter = _limiter(app, limits.rate_limit_storage, prefix)
    if limits.login_limit != "off":
        address_limits = parse_many(limits.login_limit)

        def no_failures_from_here() -> bool:
            here = (prefix, get_remote_address(), "login-address")  # the address limit's key, as Flask-Limiter makes it
            return all(limiter.limiter.get_window_stats(item, *here).remaining >= item.amount for item in address_limits)

        login: Any = app.view_functions["auth.login"]  # Any: Flask-Limiter's decorators type views loosely
        login = limiter.shared_limit(limits.login_limit, "login-account", key_func=_login_name, methods=["POST"],
                                     deduct_when=_failed, exempt_when=no_failures_from_here)(login)
        login = limiter.shared_limit(limits.login_limit, "login-address", methods=["POST"], deduct_when=_failed)(login)
        app.view_functions["auth.login"] = login
    if limits.identify_limit != "off":
        uploads = limiter.shared_limit(limits.identify_limit, "uploads")
        for endpoint in UPLOADS:
            app.view_functions[endpoint] = uploads(app.view_functions[endpoint])  # type: ignore[assignment]
    return limiter


def _limiter(app: Flask, storage: str, prefix: str) -> Limiter:
    """Flask-Limiter on `storage`. A storage the limits library does not know, or whose client is not
    installed, is a configuration error said plainly; one that cannot be reached at start (a Redis cluster
    none of whose nodes answers) counts in this process's memory, said in the log and on /status."""
    def made(uri: str) -> Limiter:
        return Limiter(get_remote_address, app=app, storage_uri=uri, storage_options=_storage_options(uri),
                       headers_enabled=True, key_prefix=prefix, in_memory_fallback_enabled=True, swallow_errors=True)

    try:
        limiter = made(storage)
    except ConfigurationError as exc:
        raise IdentifyError("bad_config", f"rate_limit_storage {redacted(storage)}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 (each storage's client raises its own kind when nothing answers)
        log.warning("rate-limit storage %s cannot be reached at start (%s): counting in this process's memory; "
                    "restart once it answers", redacted(storage), type(exc).__name__)
        app.extensions.pop("limiter", None)
        return made(MEMORY)
    if not limiter.storage.check():
        log.warning("rate-limit storage %s cannot be reached: counting in this process's memory until it can",
                    redacted(storage))
    return limiter



def rate_limit_status(limiter: Limiter, storage: str) -> dict[str, Any]:
    """Where the counters live (`storage`, the configured URI, without its secrets), whether that storage
    answers now, and what the count is shared with: the in-memory store is this process's alone, whatever the
    number of workers beside it."""
    reachable = bool(limiter.storage.check())
    in_memory = isinstance(limiter.storage, MemoryStorage)
    counting = "this process only" if in_memory else "shared" if reachable else "this process only (failing open)"
    return {"storage": redacted(storage), "reachable": reachable, "counting": counting}
