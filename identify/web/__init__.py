"""The Flask application factory: `create_app()` reads the settings (environment, then the instance file
`<data dir>/identify.toml`), loads the model and index once, and registers the API, pages and auth blueprints.

    gunicorn --workers 4 --bind 0.0.0.0:8000 'identify.web:create_app()'
"""

from __future__ import annotations

import logging
import os
import secrets
from datetime import timedelta
from typing import Any

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from identify.config import Settings, load_settings
from identify.errors import IdentifyError
from identify.service import IdentificationService

log = logging.getLogger(__name__)

FORM_SLACK_BYTES = 1024 * 1024  # room for the other form fields beside a photo at the byte limit
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


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def _error_response(exc: IdentifyError) -> Any:
    if _wants_json():
        body: dict[str, Any] = exc.to_dict()
        if "sighting" in exc.details:  # a stale version: give the current state, so the client can redo
            from identify.web.views import sighting_json

            body["sighting"] = sighting_json(exc.details["sighting"])
        return jsonify(body), exc.status
    return render_template("error.html", error=exc), exc.status


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
            limit = app.config["IDENTIFY_MAX_UPLOAD_MB"]
            return _error_response(IdentifyError("file_too_large", f"the upload is over {limit:g} MB", 413))
        response = _error_response(IdentifyError(HTTP_CODES.get(status, f"http_{status}"), exc.description or exc.name,
                                                 status))
        allowed = getattr(exc, "valid_methods", None)
        if status == 405 and allowed:  # RFC 9110: a 405 says which methods the resource takes
            body, code = response
            return body, code, {"Allow": ", ".join(allowed)}
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:  # logged with its trace; the user gets a code, never the trace
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _error_response(IdentifyError("internal_error", "something went wrong on our side; it was logged", 500))


def create_app(settings: Settings | None = None, service: IdentificationService | None = None) -> Flask:
    settings = settings or load_settings()
    service = service or IdentificationService.from_settings(settings)
    app = Flask(__name__, instance_path=str(settings.data_dir))
    limits = settings.service
    app.config.update(
        SECRET_KEY=_secret_key(settings),
        MAX_CONTENT_LENGTH=limits.max_upload_bytes + FORM_SLACK_BYTES,
        IDENTIFY_MAX_UPLOAD_MB=limits.max_upload_mb,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=limits.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the documented order of fields
    app.extensions["identify"] = service
    csrf = CSRFProtect(app)

    from identify.web import api, auth, pages

    csrf.exempt(api.bp)  # the API checks CSRF itself, for cookie-authenticated writes only (auth.api_curator)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(auth.bp)
    _register_error_handlers(app)

    @app.context_processor
    def globals_for_templates() -> dict[str, Any]:
        return {"curator": auth.current_curator_or_none(), "max_upload_mb": limits.max_upload_mb,
                "model_name": service.backbone.identity.name}

    return app
