"""The JSON API under /api/v1 (described by /api/v1/openapi.json). Errors: {"error": {"code", "message"}}."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, jsonify, request, url_for

from identify.errors import IdentifyError
from identify.web import views
from identify.web.forms import parse_count, parse_filters, parse_k, parse_review, parse_sighting_fields, text_field
from identify.web.auth import api_curator, service
from identify.web.openapi import openapi_document

bp = Blueprint("api", __name__, url_prefix="/api/v1")

PER_PAGE_LIMIT = 100
MAX_PAGE = 1_000_000


def uploaded_image() -> bytes:
    """The bytes of the multipart `image` field."""
    upload = request.files.get("image")
    if upload is None:
        raise IdentifyError("missing_image", "send the photo as the multipart form field `image`")
    return upload.read()


def uploaded_images() -> list[bytes]:
    """The bytes of every multipart `image` field: one to five photos of the same bird."""
    return [upload.read() for upload in request.files.getlist("image")]


@bp.get("/openapi.json")
def openapi() -> Any:
    return jsonify(openapi_document())


@bp.get("/status")
def status() -> Any:
    svc = service()
    return jsonify({"model": {"name": svc.backbone.identity.name, "sha256": svc.backbone.identity.sha256},
                    "index": {"name": svc.index_name, "references": svc.reference_index.count},
                    "sightings": svc.similar_index.count})


@bp.post("/identify")
def identify() -> Any:
    started = time.perf_counter()
    fields = parse_sighting_fields(request.form)  # bad fields fail before any work
    identified = service().identify_upload(uploaded_images(), fields)
    body = views.identification_json(identified.public_id, identified.result)
    # Server-Timing: the model's forward pass (of the batch this photo shared) and the whole request here.
    timing = (f"model;dur={identified.result.forward_seconds * 1000:.2f};desc=forward, "
              f"app;dur={(time.perf_counter() - started) * 1000:.2f}")
    headers = {"Location": url_for("api.sighting", sighting_id=identified.public_id), "Server-Timing": timing}
    return jsonify(body), 201, headers


@bp.get("/sightings/<sighting_id>")
def sighting(sighting_id: str) -> Any:
    svc = service()
    record = svc.sighting(svc.sighting_key(sighting_id))
    return jsonify(views.sighting_json(record, svc.neighbours_of(record)))


@bp.get("/sightings/<sighting_id>/similar")
def similar_to_sighting(sighting_id: str) -> Any:
    svc = service()
    hits = svc.similar_to_sighting(svc.sighting_key(sighting_id), parse_k(request.args.get("k")),
                                   views.filters_for_viewer(parse_filters(request.args)))
    return jsonify({"sighting_id": sighting_id, "similar": views.similar_json(hits)})


@bp.post("/similar")
def similar_to_photo() -> Any:
    k, filters = parse_k(request.values.get("k")), views.filters_for_viewer(parse_filters(request.values))
    hits = service().similar_to_photo(uploaded_image(), k, filters)
    return jsonify({"similar": views.similar_json(hits)})


@bp.get("/review/queue")
def review_queue() -> Any:
    api_curator()
    page = parse_count(request.args.get("page"), "page", 1, MAX_PAGE)
    per_page = parse_count(request.args.get("per_page"), "per_page", 20, PER_PAGE_LIMIT)
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


@bp.post("/sightings/<sighting_id>/review")
def review(sighting_id: str) -> Any:
    curator = api_curator()
    svc = service()
    outcome = svc.review(parse_review(svc.sighting_key(sighting_id), curator.id, _review_body()))
    result = views.sighting_json(outcome.sighting)
    result["reference_id"] = outcome.reference_id
    return jsonify(result)


@bp.get("/export")
def export() -> Any:
    """Sightings as Darwin Core (curators): `format` dwca (default) or csv, `status` confirmed (default) or all."""
    import tempfile
    from pathlib import Path

    from flask import send_file

    from identify.export import FORMATS, STATUSES

    api_curator()
    fmt, status = request.args.get("format", "dwca"), request.args.get("status", "confirmed")
    if fmt not in FORMATS or status not in STATUSES:
        raise IdentifyError("bad_field", f"format is one of {', '.join(FORMATS)}, status one of {', '.join(STATUSES)}")
    folder = tempfile.mkdtemp(prefix="identify-export-")
    out = Path(folder) / ("sightings-dwca.zip" if fmt == "dwca" else "sightings.csv")
    service().export(fmt, status, out, request.url_root)
    response = send_file(out, as_attachment=True, download_name=out.name,
                         mimetype="application/zip" if fmt == "dwca" else "text/csv")
    response.call_on_close(lambda: (out.unlink(missing_ok=True), Path(folder).rmdir()))
    return response


SUGGESTION_LIMIT = 50


@bp.get("/taxa")
def taxa() -> Any:
    """Names of the bird taxonomy for what was typed (`q`): common and scientific names of every authority,
    species first. The review form's suggestions come from here."""
    text = text_field(request.args.get("q"), "q") or ""
    limit = parse_count(request.args.get("limit"), "limit", 10, SUGGESTION_LIMIT)
    return jsonify({"q": text, "taxa": [views.suggestion_json(s) for s in service().suggest_taxa(text, limit)]})
