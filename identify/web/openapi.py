"""The OpenAPI 3.1 description of /api/v1, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from identify import __version__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {400: "Bad input (code says which)", 401: "Not logged in / bad token", 404: "Unknown sighting",
            409: "Stale version (body has the current sighting) or conflict", 413: "Photo over the byte or pixel limit"}
    return {str(s): _json(_ref("Error"), text[s]) for s in statuses}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


FILTERS = [
    _query("species", "Only sightings whose current answer is this species (a label, or any name of its taxon)",
           {"type": "string"}),
    _query("genus", "Only sightings whose current answer is of this genus", {"type": "string"}),
    _query("family", "Only sightings whose current answer is of this family", {"type": "string"}),
    _query("from", "Observed (else uploaded) on or after, ISO 8601", {"type": "string", "format": "date-time"}),
    _query("to", "Observed (else uploaded) on or before, ISO 8601", {"type": "string", "format": "date-time"}),
    _query("bbox", "west,south,east,north in degrees", {"type": "string", "example": "-10,35,30,60"}),
    _query("k", "How many (1-100, default 10)", {"type": "integer", "minimum": 1, "maximum": 100}),
]
IMAGE_FORM = {
    "type": "object", "required": ["image"],
    "properties": {
        "image": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1, "maxItems": 5,
                  "description": "1 to 5 photos of the same bird (repeat the field): JPEG, PNG, WebP, TIFF..."},
        "lat": {"type": "number", "minimum": -90, "maximum": 90, "description": "Default: EXIF GPS"},
        "lon": {"type": "number", "minimum": -180, "maximum": 180, "description": "Default: EXIF GPS"},
        "observed_at": {"type": "string", "format": "date-time", "description": "Default: EXIF DateTimeOriginal"},
        "observer": {"type": "string"}, "note": {"type": "string"},
        "ignore_location": {"type": "boolean", "description": "Leave place and season out of the identification"},
    },
}
SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string", "example": "not_an_image"}, "message": {"type": "string"}}}}},
    "Taxon": {"type": ["object", "null"], "description": "Null when no bird taxonomy knows the label",
              "properties": {
        "scientific_name": {"type": "string"}, "common_name": {"type": ["string", "null"]},
        "rank": {"type": "string", "enum": ["species", "subspecies", "genus", "family", "order"]},
        "genus": {"type": ["string", "null"]}, "family": {"type": ["string", "null"]},
        "order": {"type": ["string", "null"]}, "authority": {"type": "string"},
        "authority_version": {"type": "string"}}},
    "RankedSpecies": {"type": "object", "required": ["name", "score", "classifier", "knn", "taxon"], "properties": {
        "name": {"type": "string", "description": "The label (model class or reference species)"},
        "score": {"type": "number", "description": "Fused"},
        "classifier": {"type": "number", "description": "Classifier probability"},
        "knn": {"type": "number", "description": "Share of the neighbours' vote"},
        "fused": {"type": "number", "description": "The fused score before calibration"}, "taxon": _ref("Taxon"),
        "prior": {"type": "number", "description": "p(taxon | place, week); only when a place and date were used"},
        "expected_here": {"type": "boolean", "description": "Recorded near the place in season"}}},
    "RollUp": {"type": ["object", "null"], "description": "When no species is confident: the lowest taxon whose "
               "members' calibrated scores sum to the confident threshold", "properties": {
        "rank": {"type": "string", "enum": ["genus", "family", "order"]}, "scientific_name": {"type": "string"},
        "common_name": {"type": ["string", "null"]}, "score": {"type": "number"},
        "members": {"type": "array", "items": {"type": "string"}}}},
    "TaxonSuggestions": {"type": "object", "properties": {"q": {"type": "string"}, "taxa": {"type": "array",
        "items": {"type": "object", "properties": {"name": {"type": "string"}, "taxon": _ref("Taxon")}}}}},
    "Neighbour": {"type": "object", "properties": {
        "reference_id": {"type": "integer"}, "species": {"type": "string"},
        "similarity": {"type": "number", "description": "Cosine"}, "thumbnail_url": {"type": "string"}}},
    "Model": {"type": "object", "properties": {"name": {"type": "string"}, "sha256": {"type": "string"}}},
    "Identification": {"type": "object", "required": ["sighting_id", "decision", "species", "neighbours", "model"],
                       "properties": {
        "sighting_id": {"type": "string", "description": "A random token (SQL keys are never shown)"}, "url": {"type": "string"},
        "decision": {"type": "string", "enum": ["confident", "needs_review", "no_match"]},
        "reasons": {"type": "array", "items": {"type": "string"}}, "uncertainty": {"type": "number"},
        "species": {"type": "array", "items": _ref("RankedSpecies"), "maxItems": 5}, "rollup": _ref("RollUp"),
        "place": {"type": ["object", "null"], "description": "The place and date whose prior shaped the answer",
                  "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}, "date": {"type": "string"}}},
        "neighbours": {"type": "array", "items": _ref("Neighbour")}, "model": _ref("Model")}},
    "SightingSummary": {"type": "object", "properties": {
        "sighting_id": {"type": "string", "description": "A random token (SQL keys are never shown)"}, "url": {"type": "string"}, "photo_url": {"type": "string"},
        "thumbnail_url": {"type": "string"}, "decision": {"type": "string"}, "uncertainty": {"type": "number"},
        "status": {"type": "string", "enum": ["open", "confirmed", "corrected", "rejected"]},
        "answer": {"type": ["string", "null"]}, "answer_taxon": _ref("Taxon"), "version": {"type": "integer"},
        "lat": {"type": ["number", "null"]}, "lon": {"type": ["number", "null"]},
        "observed_at": {"type": ["string", "null"]}, "created_at": {"type": "string"},
        "similarity": {"type": "number", "description": "In similar-sightings lists"}}},
    "Sighting": {"allOf": [_ref("SightingSummary"), {"type": "object", "properties": {
        "species": {"type": "array", "items": _ref("RankedSpecies")}, "rollup": _ref("RollUp"),
        "neighbours": {"type": "array", "items": _ref("Neighbour")}, "reasons": {"type": "array"},
        "observer": {"type": ["string", "null"]}, "note": {"type": ["string", "null"]}, "model": _ref("Model"),
        "reviews": {"type": "array", "items": {"type": "object"}}}}]},
    "Similar": {"type": "object", "properties": {"similar": {"type": "array", "items": _ref("SightingSummary")}}},
    "Review": {"type": "object", "required": ["action", "version"], "properties": {
        "action": {"type": "string", "enum": ["confirm", "correct", "reject"]},
        "species": {"type": "string", "description": "Required by correct: a label in use, or any common or "
                    "scientific name of the bird taxonomies"}, "note": {"type": "string"},
        "version": {"type": "integer", "description": "The sighting's version you reviewed"},
        "add_as_reference": {"type": "boolean", "description": "Make the photo a reference at once (default: "
                             "true, unless rejected)"},
        "as_written": {"type": "boolean", "description": "correct: take a name no taxonomy knows, as written"}}},
}


def openapi_document() -> dict[str, Any]:
    multipart = {"required": True, "content": {"multipart/form-data": {"schema": IMAGE_FORM}}}
    curator = [{"bearer": []}, {"cookie": []}]
    sighting_id = {"name": "sighting_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "identify", "version": __version__,
                 "description": "Bird species identification by vector search fused with the classifier."},
        "servers": [{"url": "/api/v1"}],
        "paths": {
            "/identify": {"post": {"summary": "Identify a photo and store it as a sighting", "requestBody": multipart,
                                   "responses": {"201": _json(_ref("Identification"), "Identified and stored"),
                                                 **_errors(400, 413)}}},
            "/sightings/{sighting_id}": {"get": {"summary": "A stored sighting", "parameters": [sighting_id],
                                                 "responses": {"200": _json(_ref("Sighting"), "The sighting"),
                                                               **_errors(404)}}},
            "/sightings/{sighting_id}/similar": {"get": {
                "summary": "Similar past sightings (itself excluded)", "parameters": [sighting_id, *FILTERS],
                "responses": {"200": _json(_ref("Similar"), "Most similar first"), **_errors(400, 404)}}},
            "/similar": {"post": {"summary": "Similar past sightings of an uploaded photo (not stored)",
                                  "parameters": FILTERS, "requestBody": multipart,
                                  "responses": {"200": _json(_ref("Similar"), "Most similar first"),
                                                **_errors(400, 413)}}},
            "/review/queue": {"get": {
                "summary": "Open uncertain sightings, most uncertain first", "security": curator,
                "parameters": [_query("page", "1-based", {"type": "integer", "minimum": 1}),
                               _query("per_page", "1-100, default 20", {"type": "integer", "minimum": 1})],
                "responses": {"200": {"description": "items, page, per_page, total, next"}, **_errors(401)}}},
            "/sightings/{sighting_id}/review": {"post": {
                "summary": "Confirm, correct or reject; optionally add the photo as a reference", "security": curator,
                "parameters": [sighting_id],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Review")},
                                                              "application/x-www-form-urlencoded": {"schema": _ref("Review")}}},
                "responses": {"200": _json(_ref("Sighting"), "The reviewed sighting (reference_id when added)"),
                              **_errors(400, 401, 404, 409)}}},
            "/taxa": {"get": {
                "summary": "Names of the bird taxonomy matching what was typed (review suggestions)",
                "parameters": [_query("q", "What was typed", {"type": "string"}),
                               _query("limit", "1-50, default 10", {"type": "integer", "minimum": 1, "maximum": 50})],
                "responses": {"200": _json(_ref("TaxonSuggestions"), "Species first"), **_errors(400)}}},
            "/status": {"get": {"summary": "Model, index size and sightings count",
                                "responses": {"200": {"description": "Status"}}}},
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Token from identify create-curator"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "session",
                           "description": "Login session; writes also need the X-CSRFToken header"},
            },
        },
    }
