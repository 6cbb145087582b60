"""Who is asking: a curator logged in by session cookie (pages) or holding an API token (Bearer), or the public.

Public users may upload and look; only curators review. Cookie-authenticated API writes also need the CSRF
token (header X-CSRFToken), so a page on another site cannot review with a curator's cookie."""

from __future__ import annotations

import functools
from typing import Any, Callable
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError, validate_csrf
from wtforms import ValidationError

from identify.curators import CuratorInfo
from identify.errors import IdentifyError

bp = Blueprint("auth", __name__)


def service():  # type: ignore[no-untyped-def]
    return current_app.extensions["identify"]


def current_curator() -> CuratorInfo | None:
    """The curator behind this request, from its Bearer token or its session; None for the public."""
    if "curator" not in g:
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            g.auth = "token"
            g.curator = service().curators.check_token(header[7:].strip())
            if g.curator is None:
                raise IdentifyError("unauthorised", "the API token is not valid", 401)
        else:
            g.auth = "session"
            curator_id, epoch = session.get("curator_id"), session.get("epoch")
            valid = isinstance(curator_id, int) and isinstance(epoch, int)
            g.curator = service().curators.in_session(curator_id, epoch) if valid else None
    return g.curator


def current_curator_or_none() -> CuratorInfo | None:
    """For templates: a bad token shows the page as to the public instead of failing it."""
    try:
        return current_curator()
    except IdentifyError:
        return None


def api_curator() -> CuratorInfo:
    """The curator of an API request, or 401; a cookie-authenticated write must carry the CSRF token."""
    curator = current_curator()
    if curator is None:
        raise IdentifyError("unauthorised", "curator actions need a login or an API token (Authorization: Bearer)", 401)
    if g.auth == "session" and request.method not in ("GET", "HEAD", "OPTIONS"):
        try:
            validate_csrf(request.headers.get("X-CSRFToken") or request.form.get("csrf_token"))
        except ValidationError as exc:
            raise CSRFError(str(exc)) from None
    return curator


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_curator() is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapper


def local_path(target: str | None) -> str:
    """`target` if it is a path on this site, else the review queue: links must not send people elsewhere."""
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return url_for("pages.review_queue")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        name, password = request.form.get("name", ""), request.form.get("password", "")
        unusable = any("\x00" in text for text in (name, password))  # PostgreSQL refuses NUL: no such curator
        curator = None if unusable else service().curators.check_password(name, password)
        if curator is not None:
            session.clear()  # a fresh session on login: no fixation
            session["curator_id"] = curator.id
            session["epoch"] = curator.session_epoch
            session.permanent = True
            flash(f"Logged in as {curator.name}.")
            return redirect(local_path(request.form.get("next")))
        error = "Wrong name or password."
    status = 401 if error else 200
    return render_template("login.html", error=error, next=request.values.get("next", "")), status


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    curator = current_curator_or_none()
    if curator is not None and g.auth == "session":
        service().curators.end_sessions(curator.id)  # a cookie copied or saved before now opens nothing
    session.clear()
    flash("Logged out.")
    return redirect(url_for("pages.upload"))


def keep_private(response: Any) -> Any:
    """Cache-Control private, and never public beside it (`public, private` contradicts itself; a shared
    cache may take the public)."""
    response.cache_control.public = False
    response.cache_control.private = True
    return response
