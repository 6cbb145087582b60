"""The JSON API under /api/v1 (described by /api/v1/openapi.json). Errors: {"error": {"code", "message"}}."""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from identify.errors import IdentifyError
from identify.web import views
from identify.bulk_review import result_json
from identify.web.forms import (parse_bulk_review, parse_count, parse_filters, parse_k, parse_list_filters,
                                parse_reference_change,
                                parse_reference_filters, parse_review, parse_upload, text_field)
from identify.web.auth import api_curator, current_curator_or_none, service
from identify.web import reference_schemas, schemas
from identify.web.ratelimits import rate_limit_status
from identify.rules import MAX_PAGE, MAX_PER_PAGE, MAX_SUGGESTIONS
from identify.web.openapi import documented, openapi_document

bp = Blueprint("api", __name__, url_prefix="/api/v1")



def uploaded_image() -> bytes:
    """The bytes of the one multipart `image` field (a second one is refused, never silently dropped)."""
    uploads = request.files.getlist("image")
    if not uploads:
        raise IdentifyError("missing_image", "send the photo as the multipart form field `image`")
    if len(uploads) > 1:
        raise IdentifyError("too_many_photos", f"{len(uploads)} photos: a similar-sightings search takes one")
    return uploads[0].read()


@bp.get("/openapi.json")
def openapi() -> Any:
    """This document."""
    return jsonify(openapi_document())


@bp.get("/status")
@documented((200, schemas.Status, "The model, the index and how many sightings are searchable"), errors=())
def status() -> Any:
    """What is served: the model, the reference index, the sightings that similar-sightings search covers, and
    whether the rate-limit counters' storage answers."""
    svc = service()
    svc.reference_index.refresh()  # what a search made now would cover (both follow SQL, every few seconds)
    svc.similar_index.refresh()
    status = {"model": {"name": svc.backbone.identity.name, "sha256": svc.backbone.identity.sha256},
              "index": {"name": svc.index_name, "references": svc.reference_index.searchable},
              "sightings": svc.similar_index.count,
              "calibration": svc.identifier.calibration_state().to_dict(),
              "rate_limits": rate_limit_status(current_app.extensions["identify_limiter"],
                                               svc.settings.service.rate_limit_storage)}
    if current_curator_or_none() is not None:  # which worker answered, and the audit's counts: the curators' business
        status.update(process=os.getpid(), audit=svc.audit_summary().to_dict())
    return jsonify(status)


@bp.post("/identify")
@documented((201, schemas.Identification, "Identified and stored"), errors=(400, 413, 429), form=schemas.UploadForm)
def identify() -> Any:
    """Identify one to five photos of one bird and store them as a sighting."""
    started = time.perf_counter()
    fields, photos = parse_upload(request.form, request.files.getlist("image"))  # bad input fails before any work
    identified = service().identify_upload(photos, fields)
    body = views.identification_json(identified)
    # Server-Timing: the model's forward pass (of the batch this photo shared) and the whole request here.
    timing = (f"model;dur={identified.result.forward_seconds * 1000:.2f};desc=forward, "
              f"app;dur={(time.perf_counter() - started) * 1000:.2f}")
    headers = {"Location": url_for("api.sighting", sighting_id=identified.public_id), "Server-Timing": timing}
    return jsonify(body), 201, headers


@bp.get("/sightings")
@documented((200, schemas.SightingList, "One page of sightings, the latest first"), errors=(400,),
            query=schemas.SightingsQuery)
def sightings() -> Any:
    """Recent sightings, filtered by taxon (any name, any rank), date, decision and status; paged."""
    page = parse_count(request.args.get("page"), "page", 1, MAX_PAGE)
    per_page = parse_count(request.args.get("per_page"), "per_page", 20, MAX_PER_PAGE)
    records, total = service().sighting_search.page(views.filters_for_viewer(parse_list_filters(request.args)),
                                                    page, per_page)
    following: dict[str, Any] = {**request.args.to_dict(), "page": page + 1, "per_page": per_page}
    more = page * per_page < total
    return jsonify({"items": [views.sighting_summary_json(r) for r in records], "page": page, "per_page": per_page,
                    "total": total, "next": url_for("api.sightings", **following) if more else None})


@bp.get("/sightings/<sighting_id>")
@documented((200, schemas.Sighting, "The sighting"), errors=(404,))
def sighting(sighting_id: str) -> Any:
    """A stored sighting with its answer, neighbours and reviews."""
    svc = service()
    record = svc.sighting(svc.sighting_key(sighting_id))
    return jsonify(views.sighting_json(record, svc.neighbours_of(record)))


@bp.get("/sightings/<sighting_id>/similar")
@documented((200, schemas.SimilarOfSighting, "Most similar first"), errors=(400, 404), query=schemas.SimilarQuery)
def similar_to_sighting(sighting_id: str) -> Any:
    """Similar past sightings (itself left out)."""
    svc = service()
    hits = svc.similar_to_sighting(svc.sighting_key(sighting_id), parse_k(request.args.get("k")),
                                   views.filters_for_viewer(parse_filters(request.args)))
    return jsonify({"sighting_id": sighting_id, "similar": views.similar_json(hits)})


@bp.post("/similar")
@documented((200, schemas.Similar, "Most similar first"), errors=(400, 413, 429), form=schemas.SimilarForm)
def similar_to_photo() -> Any:
    """Similar past sightings of an uploaded photo (the photo is not stored)."""
    k, filters = parse_k(request.values.get("k")), views.filters_for_viewer(parse_filters(request.values))
    hits = service().similar_to_photo(uploaded_image(), k, filters)
    return jsonify({"similar": views.similar_json(hits)})


@bp.get("/review/queue")
@documented((200, schemas.ReviewQueue, "One page of the queue"), errors=(400, 401), curator=True,
            query=schemas.QueueQuery)
def review_queue() -> Any:
    """Blind audits of confident answers first (without the model's answer), then open uncertain sightings, the
    most uncertain first (curators)."""
    api_curator()
    page = parse_count(request.args.get("page"), "page", 1, MAX_PAGE)
    per_page = parse_count(request.args.get("per_page"), "per_page", 20, MAX_PER_PAGE)
    records, total = service().queue(page, per_page)
    more = page * per_page < total
    return jsonify({
        "items": [views.sighting_summary_json(r, blind=r.audit) for r in records],
        "page": page, "per_page": per_page, "total": total,
        "next": url_for("api.review_queue", page=page + 1, per_page=per_page) if more else None,
    })


def _review_body() -> dict[str, Any]:
    if request.is_json:
        try:
            body = request.get_json(silent=True)
        except RecursionError:  # nested deeper than Python's parser goes: no review is
            body = None
        if not isinstance(body, dict):
            raise IdentifyError("bad_request", "the body must be a JSON object")
        return body
    return {**request.form.to_dict(), "crop": request.form.getlist("crop") or None}


@bp.post("/sightings/<sighting_id>/review")
@documented((200, schemas.Sighting, "The reviewed sighting (reference_id when its photo became a reference)"),
            errors=(400, 401, 403, 404, 409), curator=True, json=schemas.ReviewBody)
def review(sighting_id: str) -> Any:
    """Confirm, correct or reject a sighting; its photo can become a reference at once (curators). The body is
    JSON or a form."""
    curator = api_curator()
    svc = service()
    outcome = svc.review(parse_review(svc.sighting_key(sighting_id), curator.id, _review_body()))
    result = views.sighting_json(outcome.sighting)
    result["reference_id"] = outcome.reference_id
    result["second_opinion"] = outcome.second_opinion
    result["single_curator"] = outcome.single_curator
    return jsonify(result)


@bp.get("/references")
@documented((200, reference_schemas.ReferenceList, "One page, newest first"), errors=(400, 401), curator=True,
            query=reference_schemas.ReferencesQuery)
def references() -> Any:
    """The reference set, filtered by species, source, curator, status and date (curators)."""
    api_curator()
    page = parse_count(request.args.get("page"), "page", 1, MAX_PAGE)
    per_page = parse_count(request.args.get("per_page"), "per_page", 20, MAX_PER_PAGE)
    records, total = service().references_page(parse_reference_filters(request.args), page, per_page)
    after: dict[str, Any] = {**request.args.to_dict(), "page": page + 1}
    return jsonify({"items": [views.reference_json(r) for r in records], "page": page, "per_page": per_page,
                    "total": total, "next": url_for("api.references", **after) if page * per_page < total else None})


@bp.get("/references/check")
@documented((200, reference_schemas.ReferenceHealth, "The report (nothing is changed)"), errors=(401,), curator=True)
def reference_health() -> Any:
    """A health check of the references searched: likely mislabelled ones, near-duplicates under different
    species, thin species and the pairs the index confuses most (curators)."""
    api_curator()
    return jsonify(service().reference_health().to_dict())


@bp.get("/references/<reference_id>")
@documented((200, reference_schemas.Reference, "The reference, its history and its nearest references"), errors=(401, 404),
            curator=True)
def reference(reference_id: str) -> Any:
    """One reference: photo, label, taxon, where it came from, every change, and what the index finds beside it
    (curators)."""
    api_curator()
    record, nearest = service().reference(reference_id)
    return jsonify(views.reference_json(record, nearest))


def _changed(reference_id: str, action: str) -> Any:
    curator = api_curator()
    change = parse_reference_change(_review_body(), action)
    record = service().change_reference(reference_id, action, curator.id, **change)
    waiting = action == "relabel" and record.awaiting is not None  # proposed: a second curator must agree
    return jsonify(views.reference_json(record, [])), 202 if waiting else 200


@bp.post("/references/<reference_id>/relabel")
@documented((200, reference_schemas.Reference, "Relabelled"),
            (202, reference_schemas.Reference, "Proposed: it teaches something new and waits for a second curator "
                                               "(awaiting_second_opinion); the reference keeps its label"),
            errors=(400, 401, 403, 404, 409), curator=True, json=reference_schemas.RelabelBody)
def relabel_reference(reference_id: str) -> Any:
    """Give a reference another species; every worker and `predict` follow within IDENTIFY_REFRESH_SECONDS
    (curators). Under the second-opinion rule a relabel to a species no active reference has waits for a
    second curator, who applies it by sending the same relabel; a deployment's only curator applies it at once,
    marked single-curator."""
    return _changed(reference_id, "relabel")


@bp.post("/references/<reference_id>/retire")
@documented((200, reference_schemas.Reference, "Retired: kept, out of every index and search"), errors=(400, 401, 404, 409),
            curator=True, json=reference_schemas.RetireBody)
def retire_reference(reference_id: str) -> Any:
    """Take a reference out of every search and index, keeping it for the audit trail (curators)."""
    return _changed(reference_id, "retire")


@bp.post("/references/<reference_id>/restore")
@documented((200, reference_schemas.Reference, "Restored"), errors=(400, 401, 404, 409), curator=True,
            json=reference_schemas.RestoreBody)
def restore_reference(reference_id: str) -> Any:
    """Bring a retired reference back (curators)."""
    return _changed(reference_id, "restore")


@bp.get("/review/groups")
@documented((200, reference_schemas.ReviewGroups, "Biggest group first"), errors=(401,), curator=True)
def review_groups() -> Any:
    """Open sightings that look alike and share their answer, to confirm or correct as one (curators)."""
    api_curator()
    return jsonify({"groups": [{"answer": g.answer, "items": [{**views.sighting_summary_json(r), "version": r.version}
                                                              for r in g.members]}
                               for g in service().review_groups()]})


@bp.post("/review/bulk")
@documented((200, reference_schemas.BulkReviewResult, "One result per item: each member reviewed on its own"),
            errors=(400, 401, 404), curator=True, json=reference_schemas.BulkReviewBody)
def review_bulk() -> Any:
    """Confirm, correct or reject several sightings at once, each with its own version check: a member someone
    reviewed meanwhile fails alone (its result says 409) and the others go through (curators)."""
    curator = api_curator()
    svc = service()
    results = svc.review_many(parse_bulk_review(_review_body(), svc.sighting_key, curator.id))
    return jsonify({"results": [result_json(r, views.sighting_json) for r in results]})


@bp.get("/export")
@documented((200, None, "A Darwin Core Archive (application/zip) or CSV (text/csv) file"), errors=(400, 401),
            curator=True, query=schemas.ExportQuery)
def export() -> Any:
    """Sightings as Darwin Core (curators)."""
    import tempfile
    from pathlib import Path

    from identify.export import FORMATS, STATUSES

    api_curator()
    fmt, status = request.args.get("format", "dwca"), request.args.get("status", "confirmed")
    if fmt not in FORMATS or status not in STATUSES:
        raise IdentifyError("bad_field", f"format is one of {', '.join(FORMATS)}, status one of {', '.join(STATUSES)}")
    name = "sightings-dwca.zip" if fmt == "dwca" else "sightings.csv"
    # Written to a file (the writer's interface), answered from memory: an export of a society's records is a few
    # megabytes, and the spec's wrapper reads the body anyway.
    with tempfile.TemporaryDirectory(prefix="identify-export-") as folder:
        out = Path(folder) / name
        service().export(fmt, status, out)
        body = out.read_bytes()
    return Response(body, mimetype="application/zip" if fmt == "dwca" else "text/csv",
                    headers={"Content-Disposition": f"attachment; filename={name}"})




@bp.get("/taxa")
@documented((200, schemas.TaxonSuggestions, "Species first"), errors=(400, 404), query=schemas.TaxaQuery)
def taxa() -> Any:
    """Names of the bird taxonomy for what was typed (`q`): common and scientific names of every authority,
    species first. The review form's suggestions come from here."""
    text = text_field(request.args.get("q"), "q") or ""
    limit = parse_count(request.args.get("limit"), "limit", 10, MAX_SUGGESTIONS)
    svc = service()
    # A sighting's scores and place order the names for curators only: its place is theirs to see.
    sighting = text_field(request.args.get("sighting"), "sighting")
    if sighting is not None and len(sighting) > 24:
        raise IdentifyError("bad_field", "sighting is a sighting's id (at most 24 characters)")
    key = svc.sighting_key(sighting) if sighting and views.sees_exact_places() else None
    return jsonify({"q": text, "taxa": [views.suggestion_json(s) for s in svc.suggest_taxa(text, limit, key)]})
