"""The API's request and response schemas (pydantic), from which spectree generates /api/v1/openapi.json.

Why spectree with pydantic: the schemas are typed classes like the rest of the code, spectree reads them off
the views' decorators (a route without one is not in the document, and a test says every route has one), and
pydantic can check a real response against its schema. The views still parse requests with
identify.web.forms, which gives every mistake its own error code; the models here say the same rules to
clients. Responses forbid fields they do not declare, so a field added to a view but not here fails the test
suite (response validation in tests, schemathesis) instead of drifting."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from identify.rules import (MAX_NAME, MAX_PAGE, MAX_PER_PAGE, MAX_PHOTOS, MAX_SIMILAR, MAX_SUGGESTIONS, MAX_TEXT, MAX_VERSION,
                            MIN_VERSION)


# x,y,w,h (or blank); whether the numbers lie inside the photo is checked by identify.framing (400 bad_crop)
CROP_PATTERN = r"^\s*$|^\s*[0-9.]+\s*(,\s*[0-9.]+\s*){3}$"


class Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Requests (documented; parsed by identify.web.forms) -----------------------------------------------------------

def optional(**rules: Any) -> Any:
    """A field a client may leave out. Not nullable: a form or query string has no null to send."""
    return Field(None, **rules)


class SimilarQuery(BaseModel):
    species: str = optional(description="Only sightings whose answer is this species (a label, or any name of "
                            "its taxon)", max_length=MAX_TEXT)
    genus: str = optional(description="Only sightings whose answer is of this genus", max_length=MAX_TEXT)
    family: str = optional(description="Only sightings whose answer is of this family", max_length=MAX_TEXT)
    from_: str = optional(alias="from", description="Observed (else uploaded) on or after, ISO 8601")
    to: str = optional(description="Observed (else uploaded) on or before, ISO 8601")
    bbox: str = optional(description="west,south,east,north in degrees", examples=["-10,35,30,60"])
    k: int = optional(ge=1, le=MAX_SIMILAR, description="How many (default 10)")


class QueueQuery(BaseModel):
    page: int = optional(ge=1, le=MAX_PAGE, description="1-based (default 1)")
    per_page: int = optional(ge=1, le=MAX_PER_PAGE, description="Default 20")


class SightingsQuery(BaseModel):
    species: str = optional(description="Only sightings whose answer is this taxon or inside it: a label, or any "
                            "common or scientific name of a species, genus, family or order", max_length=MAX_TEXT)
    from_: str = optional(alias="from", description="Observed (else uploaded) on or after, ISO 8601")
    to: str = optional(description="Observed (else uploaded) on or before, ISO 8601")
    decision: Literal["confident", "needs_review", "no_match"] = optional(description="The model's decision")
    status: Literal["open", "confirmed", "corrected", "rejected", "awaiting_second_opinion"] = optional(
        description="Where curation stands")
    single_curator: bool = optional(description="true: only sightings the deployment's only curator reviewed "
                                    "where the second-opinion rule would ask a second (to audit them)")
    bbox: str = optional(description="west,south,east,north in degrees", examples=["-10,35,30,60"])
    page: int = optional(ge=1, le=MAX_PAGE, description="1-based (default 1)")
    per_page: int = optional(ge=1, le=MAX_PER_PAGE, description="Default 20")


class SightingList(Schema):
    items: list[SightingSummary] = Field(description="The latest upload first; positions generalised for the "
                                         "public, exact for curators")
    page: int
    per_page: int
    total: int
    next: Optional[str]


class TaxaQuery(BaseModel):
    q: str = optional(description="What was typed", max_length=MAX_TEXT)
    sighting: str = optional(description="Curators: the sighting being reviewed, whose scores and place and "
                             "season order the names", max_length=24)
    limit: int = optional(ge=1, le=MAX_SUGGESTIONS, description="Default 10")


class ExportQuery(BaseModel):
    format: Literal["dwca", "csv"] = Field("dwca", description="A Darwin Core Archive (zip) or the occurrence CSV")
    status: Literal["confirmed", "all"] = Field("confirmed", description="Confirmed or corrected, or every sighting")


class UploadForm(BaseModel):
    image: list[bytes] = Field(description="1 to 5 photos of the same bird (repeat the field): JPEG, PNG, WebP, "
                               "TIFF...", json_schema_extra={"items": {"type": "string", "format": "binary"}},
                               min_length=1, max_length=MAX_PHOTOS)
    # Empty is "not given": a browser sends the fields of a form that were left empty.
    lat: Union[Annotated[float, Field(ge=-90, le=90)], Literal[""]] = optional(description="Default: EXIF GPS")
    lon: Union[Annotated[float, Field(ge=-180, le=180)], Literal[""]] = optional(description="Default: EXIF GPS")
    observed_at: str = optional(description="ISO 8601; default: EXIF DateTimeOriginal")
    observer: str = optional(max_length=MAX_NAME)
    note: str = optional(max_length=MAX_TEXT)
    ignore_location: bool = optional(description="Leave place and season out of the identification")
    hide_location: bool = optional(description="Show the public no position (curators still see it)")
    coordinate_uncertainty_m: Union[Annotated[float, Field(ge=0, le=2e7)], Literal[""]] = optional(
        description="How far off lat/lon may be, in metres (a phone's geolocation accuracy)")
    crop: list[str] = optional(description="Where the bird is in each photo, in the order of the `image` fields "
                               "(repeat the field; blank: that photo whole): x,y,w,h as fractions of the upright "
                               "photo, for example 0.25,0.3,0.4,0.4", max_length=MAX_PHOTOS,
                               json_schema_extra={"items": {"type": "string", "pattern": CROP_PATTERN}})


class SimilarForm(SimilarQuery):
    image: bytes = Field(description="The photo", json_schema_extra={"format": "binary"})


class ReviewBody(BaseModel):
    action: Literal["confirm", "correct", "reject", "reopen", "recrop"] = Field(
        description="reopen: back in the queue; the references it made are retired meanwhile. recrop: identify "
                    "the photos again on the crops given (an open sighting only)")
    crop: list[str] = optional(description="recrop: each photo's new crop x,y,w,h, in photo order (blank: keep "
                               "that photo's)", max_length=MAX_PHOTOS,
                               json_schema_extra={"items": {"type": "string", "pattern": CROP_PATTERN}})
    version: int = Field(ge=MIN_VERSION, le=MAX_VERSION, description="The sighting's version you reviewed")
    species: str = optional(max_length=MAX_NAME, description="Required by correct: a label in use, or "
                                   "any common or scientific name of the bird taxonomies")
    note: str = optional(max_length=MAX_TEXT)
    add_as_reference: bool = optional(description="Make the photo a reference at once (default: "
                                             "true, unless rejected)")
    as_written: bool = optional(description="correct: take a name no taxonomy knows, as written")


# Responses -----------------------------------------------------------------------------------------------------

class Problem(Schema):
    code: str
    message: str


class ErrorDetail(Schema):
    code: str = Field(examples=["not_an_image"], description="Stable; see the README's error codes")
    message: str
    problems: Optional[list[Problem]] = Field(None, description="When a request has several problems: each of "
                                              "them (`code` and `message` are the first's)")


class Error(Schema):
    error: ErrorDetail
    sighting: Optional["Sighting"] = Field(None, description="stale_version: the sighting as it is now")


class Taxon(Schema):
    scientific_name: str
    common_name: Optional[str]
    rank: Literal["species", "subspecies", "genus", "family", "order"]
    genus: Optional[str]
    family: Optional[str]
    order: Optional[str]
    authority: str
    authority_version: str
    display_name: str = Field(description="How pages name it: \"Red Junglefowl (Gallus gallus)\", \"a hummingbird "
                              "(family Trochilidae)\"")
    called: Optional[str] = Field(description="Above species: what its birds are called (\"a hummingbird\"), when "
                                  "most share one name")


class RankedSpecies(Schema):
    name: str = Field(description="The label (model class or reference species)")
    display_name: str = Field(description="How pages name it: the taxon's common and scientific name, the label "
                              "as written only when no taxonomy knows it")
    score: float = Field(description="What the answer means: calibrated when a calibration is set")
    classifier: float = Field(description="Classifier probability")
    knn: float = Field(description="Share of the neighbours' vote")
    fused: float = Field(description="The fused score before calibration")
    taxon: Optional[Taxon] = Field(description="Null when no bird taxonomy knows the label")
    prior: Optional[float] = Field(None, description="p(taxon | place, week); only when a place and date were used")
    expected_here: Optional[bool] = Field(None, description="Recorded near the place in season")


class RollUp(Schema):
    """When the species is not confident: the most specific taxon whose members' summed score clears its rank's
    certified threshold (`certified`: the answer is confident at this rank), else, where no rank is certified,
    the lowest whose sum clears the species' threshold (a suggestion for the curator)."""
    rank: Literal["genus", "family", "order"]
    scientific_name: str
    common_name: Optional[str]
    score: float
    members: list[str]
    certified: bool = Field(False, description="Confident at this rank: its own risk-controlled threshold holds")
    family: Optional[str] = Field(None, description="The family above it (a genus)")
    order: Optional[str] = Field(None, description="The order above it (a genus or family)")


class Neighbour(Schema):
    reference_id: str = Field(description="The reference's public id (as in /api/v1/references)")
    species: str = Field(description="The reference's label as its build wrote it (a folder's or manifest's name)")
    name: str = Field(description="The species it votes for, as the ranking's `name` (labels of one species-rank "
                                  "taxon are one species, named by its scientific name)")
    similarity: float = Field(description="Cosine")
    thumbnail_url: str


class Model(Schema):
    name: str
    sha256: str


class Place(Schema):
    lat: float
    lon: float
    date: str


class CalibrationState(Schema):
    state: Literal["uncalibrated", "current", "recertifying", "stale"] = Field(
        description="current: the thresholds were certified for the references served (by the newest "
                    "re-certification, or by `evaluate --write-config`); recertifying: the references changed since "
                    "the newest certification, the species they touched are held back until the next one finishes; "
                    "stale (no certification yet): the references moved beyond the documented bound from those the "
                    "calibration was fitted on, and nothing is confident until `identify evaluate --write-config` "
                    "is run again")
    reasons: list[str] = Field(description="What moved, when recertifying or stale")


class Box(Schema):
    x: float = Field(ge=0, le=1, description="Left edge, a fraction of the upright photo's width")
    y: float = Field(ge=0, le=1, description="Top edge, a fraction of its height")
    w: float = Field(gt=0, le=1, description="Width, a fraction of the photo's width")
    h: float = Field(gt=0, le=1, description="Height, a fraction of the photo's height")


class DetectedBird(Schema):
    box: Box
    score: float
    label: str = Field(description="The detector's class")


BIRD_THUMBNAIL = ("A small picture of the bird: of the crop the model looked at when there was one, else of the "
                  "whole photo")


class FramedPhoto(Schema):
    photo_url: str
    thumbnail_url: str = Field(description=BIRD_THUMBNAIL)
    crop: Optional[Box] = Field(description="What the model looked at (null: the whole photo)")
    crop_source: Optional[Literal["user", "detector", "curator", "automatic"]] = Field(
        description="Whose crop: the uploader's, the detector's best bird (with a margin), a curator's re-crop; "
                    "detector with a null crop: the detector found no bird it could frame, the whole photo was "
                    "used; automatic: no crop, the whole photo pooled with centre crops (IDENTIFY_AUTO_CROP); "
                    "null: the whole photo")
    detections: list[DetectedBird] = Field(description="Every bird the detector found, best first (empty without "
                                           "a detector, or when the photo came with a crop)")


class Identification(Schema):
    sighting_id: str = Field(description="A random token (SQL keys are never shown)")
    url: str
    answer: Optional[str] = Field(description="What the page's heading names: the top species' display name, or "
                                  "the taxon of the rank it is confident at (null for no_match)")
    answer_label: Optional[str] = Field(description="The top species' label as the model or references have it, or "
                                        "the scientific name of the taxon it is confident at")
    photos: list[FramedPhoto] = Field(description="Each photo, in upload order, with how the model looked at it")
    decision: Literal["confident", "needs_review", "no_match"]
    reasons: list[str]
    uncertainty: float
    species: list[RankedSpecies] = Field(max_length=5)
    rank: Optional[Literal["species", "genus", "family", "order"]] = Field(
        description="The rank the answer is confident at: species, or a higher one when the species could not be "
                    "certified and that rank's bound holds (then `answer` names that taxon and `rollup` says more); "
                    "null when not confident")
    rollup: Optional[RollUp]
    neighbours: list[Neighbour]
    model: Model
    place: Optional[Place] = Field(description="The place and date whose prior shaped the answer")
    same_photo_as: Optional[str] = Field(description="A reference that is this very photo (re-saved, cropped or "
                                         "flipped): it is not counted as support for the answer")
    risk_bounded: bool = Field(description="The confident threshold this answer was held to was chosen by `identify "
                               "evaluate` to bound the error of answers like it, and still holds; false: the score "
                               "has not been checked on this deployment's photos")
    calibration: CalibrationState


class SightingSummary(Schema):
    sighting_id: str = Field(description="A random token (SQL keys are never shown)")
    url: str
    photo_url: str
    thumbnail_url: str = Field(description=BIRD_THUMBNAIL)
    whole_thumbnail_url: str = Field(description="A small copy of the whole first photo (cover_crop marks the bird)")
    decision: Literal["confident", "needs_review", "no_match"]
    uncertainty: float
    status: Literal["open", "confirmed", "corrected", "rejected", "awaiting_second_opinion"]
    answer: Optional[str] = Field(description="The current answer's display name, as the sighting page's heading "
                                  "names it (null: rejected, or an open no_match)")
    answer_label: Optional[str] = Field(description="The current answer's label (model class or reference species)")
    answer_taxon: Optional[Taxon]
    rank: Optional[Literal["species", "genus", "family", "order"]] = Field(
        None, description="The rank the answer names: open, the rank it is confident at (a higher one when the "
                          "species could not be certified); reviewed, the curator's taxon's; null when open and "
                          "not confident, or rejected")
    version: int
    lat: Optional[float]
    lon: Optional[float]
    coordinate_uncertainty_m: Optional[float] = Field(description="How far off the position may be, in metres: "
                                                      "the observer's device's accuracy, or a generalised position's "
                                                      "radius")
    location: Literal["none", "exact", "generalised", "hidden", "hidden from the public"]
    place: Optional[str] = Field(None, description="The place's name (GeoNames, offline): the nearest town with its "
                                 "county and region for curators; only the county and region for a generalised "
                                 "position; null when hidden or unknown")
    observed_at: Optional[str] = Field(description="Local time of the observation, ISO 8601")
    observer: Optional[str] = Field(None, description="Who saw the bird, as they gave their name")
    cover_crop: Optional[Box] = Field(None, description="The part of the first photo the model looked at (null: "
                                       "the whole photo)")
    observed_zone: Optional[Literal["offset", "place", "unknown"]]
    created_at: str
    top: Optional[list[RankedSpecies]] = Field(None, description="The best species (lists only)")
    similarity: Optional[float] = Field(None, description="In similar-sightings lists")
    audit: bool = Field(False, description="A confident answer drawn for a blind audit: in the review queue its "
                                          "answer is left out, so the curator names the bird unswayed")


class ReviewEntry(Schema):
    curator: Optional[str] = Field(description="Who reviewed it: curators only (null for the public)")
    action: Literal["confirm", "correct", "reject", "reopen", "recrop"]
    species: Optional[str]
    note: Optional[str] = Field(description="The curator's note: curators only (null for the public)")
    version: int
    added_as_reference: bool
    created_at: Optional[str]
    single_curator: Optional[str] = Field(None, description="Set when the deployment's only curator took it where "
                                          "the second-opinion rule would ask a second: the rule, for a later audit")


class Sighting(SightingSummary):
    photos: list[FramedPhoto]
    reasons: list[str]
    observer: Optional[str]
    note: Optional[str]
    species: list[RankedSpecies]
    rollup: Optional[RollUp]
    model: Model
    reviews: list[ReviewEntry]
    neighbours: Optional[list[Neighbour]] = None
    reference_id: Optional[str] = Field(None, description="After a review: the reference the photo became")
    second_opinion: Optional[str] = Field(None, description="After a review: the rule (new_species, first_record, "
                                          "all) by which the answer awaits a second curator before it teaches")
    single_curator: Optional[str] = Field(None, description="After a review: the rule it was taken under alone, "
                                          "the deployment having one enabled curator (marked for a later audit)")


class SimilarOfSighting(Schema):
    sighting_id: str
    similar: list[SightingSummary]


class Similar(Schema):
    similar: list[SightingSummary]


class ReviewQueue(Schema):
    items: list[SightingSummary]
    page: int
    per_page: int
    total: int
    next: Optional[str]


class TaxonSuggestion(Schema):
    name: str
    taxon: Taxon


class TaxonSuggestions(Schema):
    q: str
    taxa: list[TaxonSuggestion]


class IndexStatus(Schema):
    name: str
    references: int


class RateLimitStatus(Schema):
    storage: str = Field(description="Where the rate-limit counters live (memory://, or a Redis address)")
    reachable: bool = Field(description="Whether that storage answers now")
    counting: str = Field(description="shared, or this process only: the limiter fails open while the storage "
                                      "is unreachable")


class AuditFigures(Schema):
    audited: int = Field(description="Audits a curator has named (rejected ones left out)")
    wrong: int
    error: float
    upper_bound: float = Field(description="Anytime-valid (a confidence sequence, holding however often it is "
                                           "read), at risk_confidence: what may be published")
    lower_bound: float = Field(description="Past the target: confident answers in the group are stopped")
    over_target: bool
    to_decide: int | None = Field(description="More audits that would decide the group at its observed error rate "
                                              "(0: decided; null: the rate is at the target, or past a million)")


class AuditSummary(Schema):
    target_error: float
    confidence: float
    open: int = Field(description="Audits waiting for a curator")
    groups: dict[str, AuditFigures] = Field(description="all, and each risk group (known, new, contested; +place)")
    over_target: list[str] = Field(description="Groups no longer answered confident (reason risk_over_target)")


class Status(Schema):
    model: Model
    index: IndexStatus
    sightings: int = Field(description="Sightings that a similar-sightings search of this worker covers")
    rate_limits: RateLimitStatus
    calibration: CalibrationState
    audit: Optional[AuditSummary] = Field(None, description="The live audit's figures: curators only")
    process: Optional[int] = Field(None, description="The id of the worker process that answered (several "
                                   "workers: each its own): curators only")


Error.model_rebuild()
