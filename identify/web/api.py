"""The JSON API under /api/v1 (described by /api/v1/openapi.json). Errors: {"error": {"code", "message"}}."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request, url_for

from identify.errors import IdentifyError
from identify.service import parse_filters, parse_k, parse_sighting_fields
from identify.sightings import ReviewRequest
from identify.web import views
from identify.web.auth import api_curator, service
from identify.web.openapi import openapi_document

bp = Blueprint("api", __name__, url_prefix="/api/v1")

PER_PAGE_LIMIT = 100


def uploaded_image() -> bytes:
    """The bytes of the multipart `image` field."""
    upload = request.files.get("image")
    if upload is None:
        raise IdentifyError("missing_image", "send the photo as the multipart form field `image`")
    return upload.read()


def positive_int(name: str, default: int, limit: int | None = None) -> int:
    raw = request.values.get(name, "")
    if raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise IdentifyError("bad_field", f"{name} {raw!r} is not a whole number") from None
    if value < 1 or (limit is not None and value > limit):
        raise IdentifyError("bad_field", f"{name} must lie in [1, {limit}]" if limit else f"{name} must be at least 1")
    return value


def flag(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if str(raw).strip().lower() in ("1", "true", "yes", "on"):
        return True
    if str(raw).strip().lower() in ("", "0", "false", "no", "off", "none"):
        return False
    raise IdentifyError("bad_field", f"add_as_reference {raw!r} is not true or false")


@bp.get("/openapi.json")
def openapi() -> Any:
    return jsonify(openapi_document())


@bp.get("/status")
def status() -> Any:
    svc = service()
    return jsonify({"model": {"name": svc.backbone.identity.name, "sha256": svc.backbone.identity.sha256},
                    "index": {"name": svc.index_name, "references": svc.references.count},
                    "sightings": svc.similar_index.count})


@bp.post("/identify")
def identify() -> Any:
    fields = parse_sighting_fields(request.form)  # bad fields fail before any work
    identified = service().identify_upload(uploaded_image(), fields)
    body = views.identification_json(identified.sighting_id, identified.result)
    return jsonify(body), 201, {"Location": url_for("api.sighting", sighting_id=identified.sighting_id)}


@bp.get("/sightings/<int:sighting_id>")
def sighting(sighting_id: int) -> Any:
    svc = service()
    record = svc.sighting(sighting_id)
    return jsonify(views.sighting_json(record, svc.neighbours_of(record)))


@bp.get("/sightings/<int:sighting_id>/similar")
def similar_to_sighting(sighting_id: int) -> Any:
    hits = service().similar_to_sighting(sighting_id, parse_k(request.args.get("k")), parse_filters(request.args))
    return jsonify({"sighting_id": sighting_id, "similar": views.similar_json(hits)})


@bp.post("/similar")
def similar_to_photo() -> Any:
    k, filters = parse_k(request.values.get("k")), parse_filters(request.values)
    hits = service().similar_to_photo(uploaded_image(), k, filters)
    return jsonify({"similar": views.similar_json(hits)})


@bp.get("/review/queue")
def review_queue() -> Any:
    api_curator()
    page, per_page = positive_int("page", 1), positive_int("per_page", 20, PER_PAGE_LIMIT)
    records, total = service().queue(page, per_page)
    more = page * per_page < total
    return jsonify({
        "items": [views.sighting_summary_json(r) for r in records],
        "page": page, "per_page": per_page, "total": total,
        "next": url_for("api.review_queue", page=page + 1, per_page=per_page) if more else None,
    })


def _review_body() -> dict[str, Any]:
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise IdentifyError("bad_request", "the body must be a JSON object")
        return body
    return request.form.to_dict()


@bp.post("/sightings/<int:sighting_id>/review")
def review(sighting_id: int) -> Any:
    curator = api_curator()
    body = _review_body()
    version = body.get("version")
    try:
        version = int(version)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise IdentifyError("bad_review", "version (the sighting's version you reviewed) is required") from None
    outcome = service().review(ReviewRequest(
        sighting_id=sighting_id, curator_id=curator.id, action=str(body.get("action") or ""), version=version,
        species=(str(body.get("species") or "").strip() or None), note=(str(body.get("note") or "").strip() or None),
        add_as_reference=flag(body.get("add_as_reference", False)),
    ))
    result = views.sighting_json(outcome.sighting)
    result["reference_id"] = outcome.reference_id
    return jsonify(result)
