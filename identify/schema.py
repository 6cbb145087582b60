"""SQL schema, the system of record: every embedding the service relies on lives here as float32 bytes.

FAISS indexes are derived from these rows and can always be rebuilt from them. Schema changes go through
Alembic (`migrations/`); `identify db upgrade` applies them."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy import Index as Index_  # the `Index` below is the table of published indexes
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from identify.rules import MAX_NAME, MAX_SOURCE


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# Stable constraint names, so migrations can alter them on every backend (SQLite included).
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


class Model(Base):
    """A backbone's weights. Embeddings of different models live in different vector spaces."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    network: Mapped[str] = mapped_column(String(200))
    signature: Mapped[dict[str, Any]]
    classes: Mapped[list[str]]
    embedding_dim: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Taxon(Base):
    """A taxon of a bird taxonomy (identify.taxonomy), one row per scientific name."""

    __tablename__ = "taxa"
    id: Mapped[int] = mapped_column(primary_key=True)
    scientific_name: Mapped[str] = mapped_column(String(300), unique=True)
    common_name: Mapped[Optional[str]] = mapped_column(String(300))
    rank: Mapped[str] = mapped_column(String(20))  # species, subspecies, genus, family, order
    genus: Mapped[Optional[str]] = mapped_column(String(200), index=True)
    family: Mapped[Optional[str]] = mapped_column(String(200), index=True)
    order_name: Mapped[Optional[str]] = mapped_column(String(200))  # "order" is an SQL keyword
    authority: Mapped[str] = mapped_column(String(40))  # avilist, ebird, birdlife, ibp, bbl, mapping
    authority_version: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Species(Base):
    """A species label as written (a model class, a reference folder, a curator's name) and the taxon it names
    (None when no authority knows the label: it keeps working as written)."""

    __tablename__ = "species"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME), unique=True)
    taxon_id: Mapped[Optional[int]] = mapped_column(ForeignKey("taxa.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SpeciesMerge(Base):
    """What migration 0016 moved when labels of one species-rank taxon became one species: each row of a table
    that pointed at another label of it (from) and now points at the scientific name's row (to); a row
    `species.id` records a species row the migration made. Kept for the history and the downgrade; nothing
    writes it since."""

    __tablename__ = "species_merges"
    id: Mapped[int] = mapped_column(primary_key=True)
    table_name: Mapped[str] = mapped_column(String(40))
    column_name: Mapped[str] = mapped_column(String(40))
    row_id: Mapped[int]
    from_species_id: Mapped[Optional[int]]
    to_species_id: Mapped[Optional[int]]


class Index(Base):
    """A named set of references embedded by one model; published as a FAISS index under the data dir."""

    __tablename__ = "indexes"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    model: Mapped[Model] = relationship()


def public_token() -> str:
    """What the outside world calls a row: a random token, so ids say nothing about how many there are or when.
    Never one that starts with "-", which a command line would take for an option."""
    while (token := secrets.token_urlsafe(12)).startswith("-"):
        pass
    return token


class ReferenceImage(Base):
    """A labelled photo. One row per file content (sha256), whatever folder or index it came from. A curator can
    relabel it or retire it (kept, for the audit trail, out of every index and search) and restore it;
    `version` guards concurrent changes, and `reference_changes` keeps each one."""

    __tablename__ = "reference_images"
    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(24), unique=True, default=public_token)
    file_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    path: Mapped[str] = mapped_column(Text)
    species_id: Mapped[int] = mapped_column(ForeignKey("species.id"), index=True)
    # The label as the build wrote it (a folder's or manifest's name: "Passer_domesticus"), where species_id is the
    # species it stands for (identify.taxonomy.species_key); None: the species' own name (a curator's relabel)
    label: Mapped[Optional[str]] = mapped_column(String(MAX_NAME))
    lat: Mapped[Optional[float]]
    lon: Mapped[Optional[float]]
    observed_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
    source: Mapped[Optional[str]] = mapped_column(String(MAX_SOURCE))
    # Provenance as Darwin Core's Simple Multimedia terms name it: dcterms:creator (the photographer) and
    # dcterms:license (a name or URL); `source` and `observed_at` are dcterms:source and dcterms:created.
    creator: Mapped[Optional[str]] = mapped_column(String(MAX_NAME))
    license: Mapped[Optional[str]] = mapped_column(String(MAX_SOURCE))
    # the bird or source it shows (a manifest's group, a sub-folder, "sighting N"): held out whole when the
    # references certify the thresholds (identify.certify)
    individual: Mapped[Optional[str]] = mapped_column(String(MAX_SOURCE))
    sighting_id: Mapped[Optional[int]] = mapped_column(ForeignKey("sightings.id"))  # promoted by a curator
    # The part of the photo its embedding was taken from ({x, y, w, h}, fractions; None: the whole photo)
    crop: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active", index=True)  # retired
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    species: Mapped[Species] = relationship()


class ReferenceChange(Base):
    """The audit trail of the reference set: every relabel, retirement and restoration, never updated or deleted.
    Its ids also tell every worker that the set changed (identify.vectors.live follows them)."""

    __tablename__ = "reference_changes"
    id: Mapped[int] = mapped_column(primary_key=True)
    reference_id: Mapped[int] = mapped_column(ForeignKey("reference_images.id"), index=True)
    curator_id: Mapped[Optional[int]] = mapped_column(ForeignKey("curators.id"))  # None: from the command line
    # relabel, retire, restore; propose: a relabel that waits for a second curator (the reference keeps its label
    # until another curator relabels it the same way; the last row of a reference being a proposal is what
    # "awaiting a second curator" means, so no state beside this trail can disagree with it)
    action: Mapped[str] = mapped_column(String(20))
    from_species_id: Mapped[Optional[int]] = mapped_column(ForeignKey("species.id"))
    to_species_id: Mapped[Optional[int]] = mapped_column(ForeignKey("species.id"))
    reason: Mapped[str] = mapped_column(Text)
    version: Mapped[int]  # the reference's version this change was made against
    review_id: Mapped[Optional[int]] = mapped_column(ForeignKey("reviews.id"))  # made by a (re)review
    # The second-opinion rule (identify.reviews.SecondOpinion) a proposal waits under, or a change was taken
    # under by the deployment's only curator (single-curator, for a later audit); None: no rule asked
    second_opinion: Mapped[Optional[str]] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IndexMember(Base):
    __tablename__ = "index_members"
    index_id: Mapped[int] = mapped_column(ForeignKey("indexes.id"), primary_key=True)
    reference_id: Mapped[int] = mapped_column(ForeignKey("reference_images.id"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Embedding(Base):
    """A reference's embedding under one model: float32 bytes, as the network gave them."""

    __tablename__ = "embeddings"
    __table_args__ = (UniqueConstraint("reference_id", "model_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    reference_id: Mapped[int] = mapped_column(ForeignKey("reference_images.id"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    # the classifier's output from the same forward pass (float16 over the model's classes; None: not kept)
    probabilities: Mapped[Optional[bytes]] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IndexBuild(Base):
    """One run of the index builder: what it did and where it published."""

    __tablename__ = "index_builds"
    id: Mapped[int] = mapped_column(primary_key=True)
    index_id: Mapped[int] = mapped_column(ForeignKey("indexes.id"), index=True)
    status: Mapped[str] = mapped_column(String(20))  # running, published, unchanged, failed, abandoned
    index_type: Mapped[Optional[str]] = mapped_column(String(100))
    embedded: Mapped[int] = mapped_column(default=0)
    skipped: Mapped[int] = mapped_column(default=0)
    count: Mapped[int] = mapped_column(default=0)
    path: Mapped[Optional[str]] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))


class Sighting(Base):
    """An uploaded photo, its embedding and where curation stands. `version` guards concurrent reviews."""

    __tablename__ = "sightings"
    id: Mapped[int] = mapped_column(primary_key=True)
    # What the outside world calls it: a random token, so ids say nothing about how many there are or when.
    public_id: Mapped[str] = mapped_column(String(24), unique=True, default=public_token)
    photo_sha256: Mapped[str] = mapped_column(String(64), index=True)
    photo_name: Mapped[str] = mapped_column(String(80), server_default="")  # the stored file's generated name
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    lat: Mapped[Optional[float]]
    lon: Mapped[Optional[float]]
    coordinate_uncertainty_m: Mapped[Optional[float]]  # how far off the position may be (a phone's accuracy)
    observed_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True), index=True)
    observed_offset: Mapped[Optional[int]]  # minutes east of UTC there and then; None: unknown (identify.metadata)
    observed_zone: Mapped[Optional[str]] = mapped_column(String(10))  # offset, place or unknown
    observer: Mapped[Optional[str]] = mapped_column(String(MAX_NAME))
    note: Mapped[Optional[str]] = mapped_column(Text)
    hide_location: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")  # the uploader asked
    decision: Mapped[str] = mapped_column(String(20), index=True)  # confident, needs_review, no_match
    uncertainty: Mapped[float] = mapped_column(Float, index=True)  # review queue order: highest first
    reasons: Mapped[Optional[list[str]]]  # why the decision is not confident
    # The neighbours the answer was based on, as [[reference_id, similarity], ...]: the explanation is kept as
    # given, even after the index changes.
    neighbours: Mapped[Optional[list[Any]]] = mapped_column(JSON)
    # When no species was confident: the taxon the scores rolled up to (identify.rollup), the curator's hint.
    rollup: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    # open, confirmed, corrected, rejected, awaiting_second_opinion (identify.reviews)
    status: Mapped[str] = mapped_column(String(30), default="open", index=True)
    # The current answer: the top-1 prediction until a curator confirms or corrects it; None once rejected.
    species_id: Mapped[Optional[int]] = mapped_column(ForeignKey("species.id"), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    # A confident answer drawn for a blind audit (identify.audit), and the risk group it was held to.
    audit: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0", index=True)
    risk_group: Mapped[Optional[str]] = mapped_column(String(40))


class SightingPhoto(Base):
    """One photo of a sighting (one to five photos of the same bird), with its own embedding. The sighting's
    own photo columns hold the first (its cover), and its embedding the photos' pooled one."""

    __tablename__ = "sighting_photos"
    __table_args__ = (UniqueConstraint("sighting_id", "position"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    sighting_id: Mapped[int] = mapped_column(ForeignKey("sightings.id"), index=True)
    position: Mapped[int]  # 0 for the cover, in upload order
    photo_sha256: Mapped[str] = mapped_column(String(64), index=True)
    photo_name: Mapped[str] = mapped_column(String(80))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # of what the model looked at: the crop, if any
    probabilities: Mapped[Optional[bytes]] = mapped_column(LargeBinary)  # the classifier's, same pass (float16)
    # The bird in the frame (identify.framing): the crop the forward pass used ({x, y, w, h}; None: the whole
    # photo), whose it was (user, detector, curator), and every bird a detector found ([{box, score, label}]).
    crop: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    crop_source: Mapped[Optional[str]] = mapped_column(String(20))
    detections: Mapped[Optional[list[Any]]] = mapped_column(JSON)


class Prediction(Base):
    """One ranked species of a sighting's identification, with both parts of its fused score."""

    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("sighting_id", "rank"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    sighting_id: Mapped[int] = mapped_column(ForeignKey("sightings.id"))
    rank: Mapped[int]
    species_id: Mapped[int] = mapped_column(ForeignKey("species.id"))
    score: Mapped[float]  # calibrated when a calibration was set: what a person read
    classifier: Mapped[float]
    knn: Mapped[float]
    fused: Mapped[Optional[float]]  # before calibration
    prior: Mapped[Optional[float]]  # p(taxon | place, week) when a place and date shaped the answer
    expected_here: Mapped[Optional[bool]]


class Curator(Base):
    __tablename__ = "curators"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    token_hash: Mapped[Optional[str]] = mapped_column(String(128), unique=True)
    # Every login session carries the epoch it began in; logging out or a password reset moves it on, which
    # ends every session of this curator at once, on every worker.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))  # set: no login, no token
    token_expires_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))  # None: never


class Review(Base):
    """The audit trail: every curator action on a sighting, never updated or deleted."""

    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(primary_key=True)
    sighting_id: Mapped[int] = mapped_column(ForeignKey("sightings.id"), index=True)
    curator_id: Mapped[int] = mapped_column(ForeignKey("curators.id"))
    action: Mapped[str] = mapped_column(String(20))  # confirm, correct, reject, reopen, recrop
    species_id: Mapped[Optional[int]] = mapped_column(ForeignKey("species.id"))
    note: Mapped[Optional[str]] = mapped_column(Text)
    version: Mapped[int]  # the sighting version this review was made against
    added_as_reference: Mapped[bool] = mapped_column(Boolean, default=False)
    # The second-opinion rule this review was taken under by the deployment's only curator (single-curator: a
    # later curator may audit it); None: no rule asked, or a second curator agreed
    single_curator: Mapped[Optional[str]] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OccurrenceCount(Base):
    """Records of a taxon in one H3 cell and ISO week, summed over imports (identify.prior owns it)."""

    __tablename__ = "occurrence_counts"
    __table_args__ = (UniqueConstraint("resolution", "cell", "week", "taxon"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    resolution: Mapped[int]  # of the H3 cell
    cell: Mapped[str] = mapped_column(String(20))
    week: Mapped[int]  # ISO week, 1-53
    taxon: Mapped[str] = mapped_column(String(300))  # the canonical scientific name (identify.taxonomy)
    count: Mapped[int]


class OccurrenceImport(Base):
    """One imported occurrence file: where from and how many records it gave."""

    __tablename__ = "occurrence_imports"
    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    records: Mapped[int]
    imported: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Certification(Base):
    """One re-certification of a model's index (identify.certifications owns it): its state, progress, the
    reference set it was fitted for, and what it decided. At most one runs per model and index (a unique index
    over the running ones, seen by every worker and host)."""

    __tablename__ = "certifications"
    __table_args__ = (
        Index_("ix_certifications_model_index", "model_id", "index_name", "status"),
        Index_("uq_certifications_running", "model_id", "index_name", unique=True,
               sqlite_where=text("status = 'running'"), postgresql_where=text("status = 'running'")),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    index_name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))  # running, done, failed, abandoned
    reference_state: Mapped[str] = mapped_column(String(100))  # identify.certifications.ReferenceState
    progress: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    stage: Mapped[str] = mapped_column(String(100), default="", server_default="")
    result: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)  # identify.certify.Certification.to_dict()
    error: Mapped[Optional[str]] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime(timezone=True))
