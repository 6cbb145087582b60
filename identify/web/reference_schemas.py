"""The API's schemas of curation: references as records, their health check, reviews in bulk (the rest are in
identify.web.schemas, whose rules these follow)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, Field

from identify.rules import MAX_NAME, MAX_PAGE, MAX_PER_PAGE, MAX_TEXT, MAX_VERSION, MIN_VERSION
from identify.web.schemas import BIRD_THUMBNAIL, Box, Neighbour, Schema, Sighting, SightingSummary, Taxon, optional


# Requests (documented; parsed by identify.web.forms) -----------------------------------------------------------

class BulkItem(BaseModel):
    sighting_id: str = Field(max_length=24)
    version: int = Field(ge=MIN_VERSION, le=MAX_VERSION, description="The sighting's version you reviewed")


class BulkReviewBody(BaseModel):
    action: Literal["confirm", "correct", "reject"]
    items: list[BulkItem] = Field(min_length=1, max_length=200)
    species: str = optional(max_length=MAX_NAME, description="Required by correct")
    note: str = optional(max_length=MAX_TEXT)
    add_as_reference: bool = optional(description="Default: true, unless rejected")
    as_written: bool = optional()


class ReferencesQuery(BaseModel):
    species: str = optional(description="Only this species (a label, or any name of its taxon)", max_length=MAX_TEXT)
    source: Literal["build", "review"] = optional(description="From an index build, or a curator's review")
    curator: str = optional(description="Added through this curator's review, or changed by them", max_length=MAX_TEXT)
    status: Literal["active", "retired", "all"] = Field("active", description="Retired references are kept, out of "
                                                        "every index")
    from_: str = optional(alias="from", description="Recorded on or after, ISO 8601")
    to: str = optional(description="Recorded on or before, ISO 8601")
    flag: Literal["mislabelled", "near_duplicate", "thin"] = optional(description="Only those the health check "
                                                                      "(/references/check) lists under this flag")
    page: int = optional(ge=1, le=MAX_PAGE, description="1-based (default 1)")
    per_page: int = optional(ge=1, le=MAX_PER_PAGE, description="Default 20")


class RelabelBody(BaseModel):
    species: str = Field(max_length=MAX_NAME, description="A label in use, or any common or scientific name")
    reason: str = Field(max_length=MAX_TEXT, description="Why: kept in the reference's history")
    version: int = Field(ge=MIN_VERSION, le=MAX_VERSION, description="The reference's version you changed")
    as_written: bool = optional(description="Take a name no taxonomy knows, as written")


class RetireBody(BaseModel):
    reason: str = Field(max_length=MAX_TEXT, description="Why: kept in the reference's history")
    version: int = Field(ge=MIN_VERSION, le=MAX_VERSION, description="The reference's version you changed")


class RestoreBody(BaseModel):
    reason: str = optional(max_length=MAX_TEXT, description="Why (default: restored)")
    version: int = optional(ge=MIN_VERSION, le=MAX_VERSION, description="The reference's version you changed")


# Responses -----------------------------------------------------------------------------------------------------

class ReferenceChange(Schema):
    action: Literal["relabel", "retire", "restore", "propose"] = Field(
        description="propose: a relabel that waits for a second curator (the reference keeps its label)")
    curator: Optional[str] = Field(description="None: from the command line")
    reason: str
    from_species: Optional[str]
    to_species: Optional[str]
    version: int = Field(description="The version it was made against")
    at: str
    second_opinion: Optional[str] = Field(None, description="The second-opinion rule (new_species, first_record, "
                                          "all) a proposal waits under, or a change was taken under by the "
                                          "deployment's only curator")
    single_curator: Optional[str] = Field(None, description="Set when one curator made the change alone, where "
                                          "the rule would ask a second: the rule, for a later audit")


class Provenance(Schema):
    """Darwin Core's Simple Multimedia terms for the photo (dcterms:creator, license, source, created)."""

    creator: Optional[str] = Field(description="The photographer: the manifest's `photographer`, or the observer of "
                                   "the sighting it came from")
    license: Optional[str] = Field(description="The manifest's `licence`: a name (CC BY 4.0) or a URL")
    source: Optional[str] = Field(description="Where it came from: the manifest's `source`, or its sighting")
    created: Optional[str] = Field(description="When the photo was taken (ISO 8601)")


class Reference(Schema):
    id: str = Field(description="The reference's public id: the same in answers' neighbours and review results")
    species: str = Field(description="The species it stands for (labels of one species-rank taxon are one species, "
                                     "named by its scientific name)")
    label: str = Field(description="Its label as its build wrote it (a folder's or manifest's name); after a "
                                   "relabel, the species")
    taxon: Optional[Taxon]
    status: Literal["active", "retired"]
    version: int = Field(description="Send it back with a change (optimistic concurrency)")
    thumbnail_url: str = Field(description=BIRD_THUMBNAIL)
    crop: Optional[Box] = Field(description="The part of the photo its embedding was taken from (null: the whole "
                                            "photo): the manifest's `crop`, or the crop of the sighting it came from")
    source: Literal["build", "review"]
    source_detail: Optional[str] = Field(description="The build manifest's `source` column")
    sighting_id: Optional[str] = Field(description="The sighting whose review made it a reference")
    added_by: Optional[str] = Field(description="The curator whose review made it a reference")
    lat: Optional[float]
    lon: Optional[float]
    observed_at: Optional[str]
    created_at: Optional[str]
    provenance: Provenance = Field(description="Who took the photo, under which licence, from where, when")
    awaiting_second_opinion: Optional[ReferenceChange] = Field(
        None, description="A relabel one curator proposed that waits for a second: another curator applies it by "
                          "sending the same relabel")
    changes: Optional[list[ReferenceChange]] = None
    nearest: Optional[list[Neighbour]] = Field(None, description="Its nearest active references, itself left out")


class ReferenceList(Schema):
    items: list[Reference]
    page: int
    per_page: int
    total: int
    next: Optional[str]


class Mislabel(Schema):
    id: str = Field(description="The reference's public id")
    species: str = Field(description="Its label")
    suggested: str = Field(description="What its neighbours (and the classifier) name")
    quality: float = Field(description="cleanlab's label quality score: lower is likelier wrong")
    agreeing: int = Field(description="Of its k nearest references, how many share its label")


class NearDuplicate(Schema):
    a: str
    b: str
    species_a: str
    species_b: str
    similarity: float


class ConfusedPair(Schema):
    a: str
    b: str
    count: int = Field(description="References of one whose nearest other reference is of the other")
    share: float


class ReferenceHealth(Schema):
    references: int
    species: int
    k: int
    classifier: bool = Field(description="Whether the classifier's probabilities were part of the evidence")
    mislabelled: list[Mislabel]
    near_duplicates: list[NearDuplicate]
    thin_species: dict[str, int]
    confused_pairs: list[ConfusedPair]
    method: str


class GroupItem(SightingSummary):
    version: int


class ReviewGroup(Schema):
    answer: str = Field(description="The members' shared current answer")
    items: list[GroupItem]


class ReviewGroups(Schema):
    groups: list[ReviewGroup]


class BulkProblem(Schema):
    code: str
    message: str


class BulkResult(Schema):
    sighting_id: str
    status: int = Field(description="200, or the status this member's review alone failed with (409: stale)")
    sighting: Optional[Sighting] = None
    reference_id: Optional[str] = None
    second_opinion: Optional[str] = None
    single_curator: Optional[str] = None
    error: Optional[BulkProblem] = None


class BulkReviewResult(Schema):
    results: list[BulkResult]
