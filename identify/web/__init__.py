"""The Flask application factory: `create_app()` reads the settings (environment, then the instance file
`<data dir>/identify.toml`), loads the model and index once, and registers the API, pages and auth blueprints.

    gunicorn --workers 4 --bind 0.0.0.0:8000 'identify.web:create_app()'
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
import uuid
from datetime import timedelta
from typing import Any

from flask import Flask, g, jsonify, render_template, request
from flask_talisman import Talisman
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.exceptions import HTTPException

from identify.config import Settings, load_settings
from identify import places
from identify.errors import IdentifyError
from identify.rules import MAX_PHOTOS
from identify.faults import fault_of
from identify.web.auth import keep_private
from identify.web.openapi import check_response, check_responses_enabled
from identify.web.ratelimits import rate_limits
from identify.service import IdentificationService

log = logging.getLogger(__name__)
request_log = logging.getLogger("identify.requests")

# No inline script anywhere (app.js is a file); style attributes carry the score bars' widths. Photos previewed
# before an upload are blob: URLs.
CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self' 'unsafe-inline'",
    "img-src": "'self' data: blob:",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

FORM_SLACK_BYTES = 1024 * 1024  # room for the other form fields beside a photo at the byte limit
# A text field of a form (notes and names take 2,000 characters, 8 kB of UTF-8 at most) and the parts of one
# form (five photos and a dozen fields): past these, Werkzeug stops reading the form. (Werkzeug's own default
# field size: its multipart reader also buffers 64 kB reads under the same bound, so it must not be smaller.)
MAX_FORM_FIELD_BYTES = 500 * 1024
MAX_FORM_PARTS = 100
HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "file_too_large",
              429: "too_many_requests"}


def _secret_key(settings: Settings) -> str:
    """The configured key, else one generated once into the data dir, so every worker process shares it."""
    if settings.service.secret_key:
        return settings.service.secret_key
    path = settings.data_dir / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secrets.token_hex(32))
    return path.read_text().strip()


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _printable(text: str) -> str:
    """`text` for a log line: control characters (a CR LF in a path would forge a line) as \\xNN escapes."""
    return CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def _error_response(exc: IdentifyError) -> Any:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
    if _wants_json():
        body: dict[str, Any] = exc.to_dict()
        if "sighting" in exc.details:  # a stale version: give the current state, so the client can redo
            from identify.web.views import sighting_json

            body["sighting"] = sighting_json(exc.details["sighting"])
        return jsonify(body), exc.status, headers
    return render_template("error.html", error=exc), exc.status, headers


REPEATABLE = {"image", "crop"}  # an upload's photos and their crops; every other API field takes one value


def _one_value_per_field() -> None:
    """An API field given twice is refused rather than one of its values picked (which would the client mean?)."""
    if not request.path.startswith("/api/"):
        return
    for fields in (request.args, request.form):
        repeated = sorted(key for key in fields if key not in REPEATABLE and len(fields.getlist(key)) > 1)
        if repeated:
            raise IdentifyError("bad_field", f"{repeated[0]} is given {len(fields.getlist(repeated[0]))} times; "
                                "give it once")


def _too_large(app: Flask) -> IdentifyError:
    """Which of Werkzeug's limits a 413 met: the whole upload's bytes, or a text field's bytes or the parts."""
    length, limit = request.content_length, app.config["MAX_CONTENT_LENGTH"]
    if length is not None and length <= limit:
        return IdentifyError("form_too_large", f"a text field is over {MAX_FORM_FIELD_BYTES // 1024} kB or the form "
                             f"has over {MAX_FORM_PARTS} parts: a note or a name takes at most 2,000 characters, a "
                             "sighting 1 to 5 photos", 413)
    return IdentifyError("file_too_large", f"the upload is over {app.config['IDENTIFY_MAX_UPLOAD_MB']:g} MB", 413)


FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def _well_formed_form() -> None:
    """A form part whose name cannot be read (`name="\\"`) is refused before anything reads the form: Flask-WTF's
    CSRF check and the field checks would each meet a field named None (a 500)."""
    if request.mimetype in FORM_TYPES and (None in request.form or None in request.files):
        raise IdentifyError("bad_multipart", 'a part of the form has no readable field name: each part needs '
                            'Content-Disposition: form-data; name="..."')


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(IdentifyError)
    def identify_error(exc: IdentifyError) -> Any:
        return _error_response(exc)

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> Any:
        return _error_response(IdentifyError("csrf_failed", f"{exc.description} Reload the page and try again.", 400))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        status = exc.code or 500
        if status == 413:
            return _error_response(_too_large(app))
        code = HTTP_CODES.get(status, "bad_request" if status < 500 else "internal_error")  # registered codes only
        response = _error_response(IdentifyError(code, exc.description or exc.name, status))
        allowed = getattr(exc, "valid_methods", None)
        if status == 405 and allowed:  # RFC 9110: a 405 says which methods the resource takes
            body, code, headers = response
            return body, code, {**headers, "Allow": ", ".join(allowed)}
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:  # logged with its trace; the user gets a code, never the trace
        fault = fault_of(exc)
        if fault is not None:  # the database or the disk, not us: worth a retry
            log.warning("%s on %s %s: %s", fault.code, request.method, _printable(request.path), exc)
            return _error_response(fault)
        log.exception("unexpected error on %s %s", request.method, _printable(request.path))
        return _error_response(IdentifyError("internal_error", "something went wrong on our side; it was logged", 500))


def _private_to_curators(response: Any) -> Any:
    """What a curator is shown (exact positions, the queue) is never kept by a shared cache, and a cache that
    keeps the public's answer must tell the two apart."""
    if g.get("curator") is not None:
        keep_private(response)
        response.vary.update(("Authorization", "Cookie"))
    return response


REFUSED = (429, 503)  # the statuses whose Retry-After means something: over a limit, or down for a moment


def _retry_after_only_when_refused(response: Any) -> Any:
    """Flask-Limiter writes Retry-After on every answer it counts; on a 201 it tells a client to wait for
    nothing."""
    if response.status_code not in REFUSED:
        response.headers.pop("Retry-After", None)
    return response


def _security_headers(app: Flask, secure: bool) -> None:
    """CSP, X-Content-Type-Options, frame-ancestors / X-Frame-Options, Referrer-Policy (flask-talisman); HSTS
    and HTTPS redirects only behind HTTPS (IDENTIFY_SECURE_COOKIES), which a reverse proxy terminates."""
    Talisman(app, force_https=False, strict_transport_security=secure, session_cookie_secure=secure,
             content_security_policy=CONTENT_SECURITY_POLICY, frame_options="DENY",
             referrer_policy="strict-origin-when-cross-origin")


def _request_log(app: Flask) -> None:
    """One line per request: method, path, status, duration and a request id, which the response carries as
    X-Request-ID (a caller's own id is kept when it looks like one)."""
    if not request_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        request_log.addHandler(handler)
        request_log.setLevel(logging.INFO)
        request_log.propagate = False

    @app.before_request
    def start() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        g.started = time.perf_counter()

    @app.after_request
    def finish(response: Any) -> Any:
        request_id = g.get("request_id") or uuid.uuid4().hex
        response.headers["X-Request-ID"] = request_id
        took = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        request_log.info("%s %s %s %.1fms id=%s", _printable(request.method), _printable(request.path),
                         response.status_code, took, request_id)
        return response


def create_app(settings: Settings | None = None, service: IdentificationService | None = None) -> Flask:
    settings = settings or load_settings()
    service = service or IdentificationService.from_settings(settings)
    app = Flask(__name__, instance_path=str(settings.data_dir))
    limits = settings.service
    app.config.update(
        SECRET_KEY=_secret_key(settings),
        MAX_CONTENT_LENGTH=limits.max_upload_bytes + FORM_SLACK_BYTES,
        MAX_FORM_MEMORY_SIZE=MAX_FORM_FIELD_BYTES,
        MAX_FORM_PARTS=MAX_FORM_PARTS,
        IDENTIFY_MAX_UPLOAD_MB=limits.max_upload_mb,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=limits.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the documented order of fields
    app.extensions["identify"] = service
    places.warm_up()  # the place-name table loads beside start-up, not on the first visitor's request
    app.before_request(_well_formed_form)  # before CSRFProtect's own check, which reads the form
    csrf = CSRFProtect(app)

    from identify.web import api, auth, pages

    csrf.exempt(api.bp)  # the API checks CSRF itself, for cookie-authenticated writes only (auth.api_curator)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(auth.bp)
    _register_error_handlers(app)
    _security_headers(app, limits.secure_cookies)
    _request_log(app)
    # Flask runs after-request hooks last registered first: registered before the limiter's, this one runs after
    # the limiter has written its headers.
    app.after_request(_retry_after_only_when_refused)
    app.extensions["identify_limiter"] = rate_limits(app, limits, settings.data_dir)
    if limits.proxy_hops:  # behind the README's reverse proxy: the client is in X-Forwarded-For, not the peer
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=limits.proxy_hops, x_proto=limits.proxy_hops)  # type: ignore[method-assign]
    if check_responses_enabled():
        app.after_request(check_response)
    app.before_request(_one_value_per_field)
    app.after_request(_private_to_curators)

    @app.context_processor
    def globals_for_templates() -> dict[str, Any]:
        return {"curator": auth.current_curator_or_none(), "max_upload_mb": limits.max_upload_mb,
                "max_photos": MAX_PHOTOS, "model_name": service.backbone.identity.name}

    return app
