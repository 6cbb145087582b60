"""Sightings in SQL: storing an identified upload (and a curator's re-crop of it), reading it back (with its
reviews, for display), export rows and prior records. Finding sightings by filters (the list, the
similar-sightings lookup) is identify.sighting_search's. Reviews, the review queue and promotion to a
reference are identify.reviews's.

Every write is one transaction: a sighting and its predictions land together or not at all."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator, Sequence

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from identify.errors import IdentifyError
from identify.framing import Crop, Detection, Framing
from identify.fusion import RankedSpecies
from identify.metadata import ObservedTime, as_utc
from identify.observation import WhereAndWhen
from identify.references import References, taxon_of_row
from identify.schema import Curator, Model, Prediction, Review, Sighting, SightingPhoto, Species
from identify.schema import Taxon as TaxonRow
from identify.storage import IN_CHUNK, Store, key_of_public_id, packed_probabilities, rows_to_arrays
from identify.taxonomy import Taxon




@dataclass(frozen=True)
class PhotoOfSighting:
    sha256: str
    name: str  # the stored file's generated name
    embedding: np.ndarray | None = None  # its own, as the network gave it (None when read back for display)
    framing: Framing | None = None  # how the model looked at it: crop, whose, what a detector found
    probabilities: np.ndarray | None = None  # the classifier's, from the same forward pass (kept for promotion)


@dataclass(frozen=True)
class NewSighting:
    photos: Sequence[PhotoOfSighting]  # one to five photos of the same bird; the first is the cover
    model_id: int
    embedding: np.ndarray  # the photos' pooled embedding (identify.identifier.pool_evidence)
    decision: str
    reasons: Sequence[str]
    uncertainty: float
    predictions: Sequence[RankedSpecies]  # best first
    neighbours: Sequence[tuple[int, float]]  # (reference id, similarity), nearest first
    rollup: dict[str, Any] | None = None  # identify.rollup.RollUp.to_dict(), when not confident
    where: WhereAndWhen = WhereAndWhen()
    coordinate_uncertainty_m: float | None = None  # as the observer's device stated it
    observer: str | None = None
    note: str | None = None
    hide_location: bool = False
    audit: bool = False  # drawn for a blind audit (identify.audit)
    risk_group: str | None = None  # the group of answers whose threshold it was held to


@dataclass(frozen=True)
class ReviewRecord:
    id: int
    curator: str
    action: str
    species: str | None
    note: str | None
    version: int
    added_as_reference: bool
    created_at: datetime
    single_curator: str | None = None  # the second-opinion rule it was taken under by the only curator


@dataclass(frozen=True)
class SightingRecord:
    id: int  # SQL's key: never shown outside
    public_id: str  # what URLs and the API call it
    photo_sha256: str
    photo_name: str
    decision: str
    reasons: list[str]
    uncertainty: float
    status: str
    species: str | None  # the current answer: top-1 until a curator decides
    taxon: Taxon | None  # the taxon the current answer names
    version: int
    lat: float | None
    lon: float | None
    observed_at: datetime | None  # UTC
    observer: str | None
    note: str | None
    created_at: datetime
    model_name: str
    model_sha256: str
    predictions: list[RankedSpecies] = field(default_factory=list)
    neighbours: list[tuple[int, float]] = field(default_factory=list)
    rollup: dict[str, Any] | None = None
    reviews: list[ReviewRecord] = field(default_factory=list)
    observed: ObservedTime | None = None  # observed_at with its offset, as the observer's clock read
    hide_location: bool = False  # the uploader asked: the public sees no position at all
    photos: list[PhotoOfSighting] = field(default_factory=list)  # every photo, the cover first
    coordinate_uncertainty_m: float | None = None  # stated by the observer's device (None: not stated)
    audit: bool = False  # a confident answer drawn for a blind audit: curators see it without the answer

    @property
    def observed_local(self) -> str | None:
        """ISO 8601 in the offset of the place (no offset when unknown)."""
        return self.observed.isoformat() if self.observed is not None else None


def observed_of(sighting: Sighting) -> ObservedTime | None:
    """When the sighting was made, with the offset of the observer's clock (None: unknown)."""
    if sighting.observed_at is None:
        return None
    utc = as_utc(sighting.observed_at)
    if sighting.observed_zone is None:  # stored before zones were kept: a UTC instant
        return ObservedTime(utc, 0, "offset")  # type: ignore[arg-type]
    return ObservedTime(utc, sighting.observed_offset, sighting.observed_zone)  # type: ignore[arg-type]


def _photo_values(embedding: np.ndarray | None, framing: Framing | None,
                  probabilities: np.ndarray | None = None) -> dict[str, Any]:
    """A sighting photo's columns of what the model looked at."""
    framing = framing or Framing()
    return {"embedding": np.ascontiguousarray(embedding, dtype=np.float32).tobytes(),
            "probabilities": packed_probabilities(probabilities),
            "crop": framing.crop.to_dict() if framing.crop is not None else None, "crop_source": framing.source,
            "detections": [d.to_dict() for d in framing.detections] or None}


def _framing_of(crop: Any, source: str | None, detections: Any) -> Framing:
    return Framing(Crop.of(crop), source, tuple(Detection.of(d) for d in detections or ()))


class SightingStore:
    def __init__(self, store: Store, references: References) -> None:
        self.store = store
        self.references = references
        self.sessions = store.sessions

    def _species_id(self, session: Session, name: str) -> int:
        return self.references.species_id(session, name)

    # ---- writing an upload -------------------------------------------------------------------------------
    def set_review_state(self, session: Session, sighting_id: int, version: int, status: str,
                         species_id: int | None) -> bool:
        """In the caller's transaction: the status and species a review leaves, and the next version, only if
        the sighting is still at `version` (compare and set: of two curators, one wins). False if it was not."""
        changed = session.execute(
            update(Sighting)
            .where(Sighting.id == sighting_id, Sighting.version == version)
            .values(status=status, species_id=species_id, version=Sighting.version + 1)
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]  # a CursorResult, for an UPDATE
        return bool(changed == 1)

    def add(self, new: NewSighting) -> tuple[int, str]:
        """Store a sighting; returns (SQL key, public id)."""
        observed = new.where.time
        with self.sessions.begin() as session:
            sighting = Sighting(
                photo_sha256=new.photos[0].sha256,
                photo_name=new.photos[0].name,
                model_id=new.model_id,
                lat=new.where.lat,
                lon=new.where.lon,
                coordinate_uncertainty_m=new.coordinate_uncertainty_m,
                observed_at=observed.utc if observed else None,
                observed_offset=observed.offset_minutes if observed else None,
                observed_zone=observed.zone if observed else None,
                observer=new.observer,
                note=new.note,
                hide_location=new.hide_location, audit=new.audit, risk_group=new.risk_group,
                status="open",
                **self._answer_values(session, new.embedding, new.decision, new.reasons, new.uncertainty,
                                      new.predictions, new.neighbours, new.rollup),
            )
            session.add(sighting)
            session.flush()
            session.execute(insert(SightingPhoto), [
                {"sighting_id": sighting.id, "position": position, "photo_sha256": photo.sha256,
                 "photo_name": photo.name, **_photo_values(photo.embedding, photo.framing, photo.probabilities)}
                for position, photo in enumerate(new.photos)])
            self._insert_predictions(session, sighting.id, new.predictions)
            return sighting.id, sighting.public_id

    def _answer_values(self, session: Session, embedding: np.ndarray, decision: str, reasons: Sequence[str],
                       uncertainty: float, predictions: Sequence[RankedSpecies],
                       neighbours: Sequence[tuple[int, float]], rollup: dict[str, Any] | None) -> dict[str, Any]:
        """The sighting's columns that hold its answer (an upload's, or a re-crop's)."""
        return dict(embedding=np.ascontiguousarray(embedding, dtype=np.float32).tobytes(), decision=decision,
                    reasons=list(reasons), uncertainty=uncertainty,
                    neighbours=[[int(i), round(float(s), 6)] for i, s in neighbours], rollup=rollup,
                    species_id=self._species_id(session, predictions[0].name) if predictions else None)

    def _insert_predictions(self, session: Session, sighting_id: int, predictions: Sequence[RankedSpecies]) -> None:
        rows = [{"sighting_id": sighting_id, "rank": rank, "species_id": self._species_id(session, p.name),
                 "score": p.score, "classifier": p.classifier, "knn": p.knn, "fused": p.fused,
                 "prior": p.prior, "expected_here": p.expected_here}
                for rank, p in enumerate(predictions, start=1)]
        if rows:
            session.execute(insert(Prediction), rows)  # one executemany, not one ORM object per row

    def replace_answer(self, session: Session, sighting_id: int, version: int, answer: dict[str, Any],
                       photos: Sequence[tuple[np.ndarray, Framing, np.ndarray | None]]) -> bool:
        """In the caller's transaction: a new answer for an open sighting looked at again (a curator's
        re-crop: `answer` as identify.uploads gives it, each photo's new embedding, framing and classifier output), and the next
        version, only if it is still at `version`. False if it was not."""
        values = self._answer_values(session, **answer)
        changed = session.execute(
            update(Sighting).where(Sighting.id == sighting_id, Sighting.version == version)
            .values(**values, version=Sighting.version + 1).execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        if changed != 1:
            return False
        for position, (embedding, framing, probabilities) in enumerate(photos):
            session.execute(update(SightingPhoto)
                            .where(SightingPhoto.sighting_id == sighting_id, SightingPhoto.position == position)
                            .values(**_photo_values(embedding, framing, probabilities))
                            .execution_options(synchronize_session=False))
        session.execute(delete(Prediction).where(Prediction.sighting_id == sighting_id))
        self._insert_predictions(session, sighting_id, answer["predictions"])
        return True

    # ---- reading -----------------------------------------------------------------------------------------
    def get(self, sighting_id: int, with_reviews: bool = True) -> SightingRecord:
        with self.sessions() as session:
            return self.record_in(session, sighting_id, with_reviews)

    def record_in(self, session: Session, sighting_id: int, with_reviews: bool = True) -> SightingRecord:
        """The sighting as a record, read in the caller's session (a review reads it in its own transaction)."""
        row = session.execute(
            select(Sighting, Species.name, TaxonRow, Model.name, Model.sha256)
            .join(Model, Model.id == Sighting.model_id)
            .outerjoin(Species, Species.id == Sighting.species_id)
            .outerjoin(TaxonRow, TaxonRow.id == Species.taxon_id)
            .where(Sighting.id == sighting_id)
        ).first()
        if row is None:
            raise IdentifyError("unknown_sighting", "no such sighting", 404)
        sighting, species, taxon, model_name, model_sha256 = row
        predictions = [
            RankedSpecies(name, score, classifier, knn, taxon_of_row(taxon), fused=fused, prior=prior,
                          expected_here=expected_here)
            for name, score, classifier, knn, fused, prior, expected_here, taxon in session.execute(
                select(Species.name, Prediction.score, Prediction.classifier, Prediction.knn, Prediction.fused,
                       Prediction.prior, Prediction.expected_here, TaxonRow)
                .join(Species, Species.id == Prediction.species_id)
                .outerjoin(TaxonRow, TaxonRow.id == Species.taxon_id)
                .where(Prediction.sighting_id == sighting_id)
                .order_by(Prediction.rank)
            )
        ]
        return SightingRecord(
            id=sighting.id, public_id=sighting.public_id, photo_sha256=sighting.photo_sha256,
            photo_name=sighting.photo_name,
            decision=sighting.decision, reasons=list(sighting.reasons or []), uncertainty=sighting.uncertainty,
            status=sighting.status, species=species, taxon=taxon_of_row(taxon), version=sighting.version,
            lat=sighting.lat, lon=sighting.lon,
            observed_at=as_utc(sighting.observed_at), observer=sighting.observer, note=sighting.note,
            created_at=as_utc(sighting.created_at), model_name=model_name, model_sha256=model_sha256,
            predictions=predictions,
            neighbours=[(int(i), float(s)) for i, s in sighting.neighbours or []],
            rollup=sighting.rollup, audit=sighting.audit,
            observed=observed_of(sighting),
            hide_location=bool(sighting.hide_location), coordinate_uncertainty_m=sighting.coordinate_uncertainty_m,
            photos=[PhotoOfSighting(sha, name, framing=_framing_of(crop, source, found))
                    for sha, name, crop, source, found in session.execute(
                select(SightingPhoto.photo_sha256, SightingPhoto.photo_name, SightingPhoto.crop,
                       SightingPhoto.crop_source, SightingPhoto.detections)
                .where(SightingPhoto.sighting_id == sighting.id).order_by(SightingPhoto.position))],
            reviews=self._reviews(session, sighting_id) if with_reviews else [],
        )

    def _reviews(self, session: Session, sighting_id: int) -> list[ReviewRecord]:
        rows = session.execute(
            select(Review, Curator.name, Species.name)
            .join(Curator, Curator.id == Review.curator_id)
            .outerjoin(Species, Species.id == Review.species_id)
            .where(Review.sighting_id == sighting_id)
            .order_by(Review.id)
        )
        return [
            ReviewRecord(r.id, curator, r.action, species, r.note, r.version, r.added_as_reference,
                         as_utc(r.created_at), r.single_curator)
            for r, curator, species in rows
        ]

    def many(self, ids: Sequence[int]) -> dict[int, SightingRecord]:
        with self.sessions() as session:
            return {i: self.record_in(session, i, with_reviews=False) for i in ids}

    def key_of(self, public_id: str) -> int:
        """The SQL key of the sighting the outside world calls `public_id`; 404 when there is none. An id that
        no token could be (a NUL, which PostgreSQL refuses in text: a 500 once) is answered without asking SQL."""
        return key_of_public_id(self.sessions, Sighting, public_id, "unknown_sighting", "sighting")

    def embedding(self, sighting_id: int) -> np.ndarray:
        with self.sessions() as session:
            blob = session.scalar(select(Sighting.embedding).where(Sighting.id == sighting_id))
        if blob is None:
            raise IdentifyError("unknown_sighting", "no such sighting", 404)
        return np.frombuffer(blob, dtype=np.float32)

    def crops_of(self, photo_sha256: str) -> list[Crop]:
        """The crops stored for a photo, by any sighting that holds it: the thumbnails that may be made of it."""
        with self.sessions() as session:
            stored = session.scalars(select(SightingPhoto.crop).where(SightingPhoto.photo_sha256 == photo_sha256))
            return [crop for crop in map(Crop.of, stored) if crop is not None]

    def by_photo(self, photo_sha256: str) -> str | None:
        """The stored name of a photo some sighting uploaded (any of its photos), or None."""
        with self.sessions() as session:
            return session.scalar(select(SightingPhoto.photo_name)
                                  .where(SightingPhoto.photo_sha256 == photo_sha256).limit(1))

    def confirmed_records(self) -> list[tuple[str, float, float, datetime]]:
        """(scientific name, lat, lon, observed_at) of sightings a curator confirmed or corrected, with a place,
        a date and a taxon: occurrence records for the place-and-season prior."""
        with self.sessions() as session:
            rows = session.execute(
                select(TaxonRow.scientific_name, Sighting.lat, Sighting.lon, Sighting.observed_at)
                .join(Species, Species.id == Sighting.species_id).join(TaxonRow, TaxonRow.id == Species.taxon_id)
                .where(Sighting.status.in_(("confirmed", "corrected")), Sighting.lat.is_not(None),
                       Sighting.lon.is_not(None), Sighting.observed_at.is_not(None))
            ).all()
        return [(name, lat, lon, as_utc(when)) for name, lat, lon, when in rows]  # type: ignore[misc]

    def names_photo(self, photo_name: str) -> bool:
        """Whether a committed sighting names this stored photo file (the photo clean-up asks under its lock).
        The name starts with the photo's hash, which both tables index."""
        sha256 = photo_name.partition(".")[0]
        with self.sessions() as session:
            return any(session.scalar(select(table.id).where(table.photo_sha256 == sha256,
                                                             table.photo_name == photo_name).limit(1)) is not None
                       for table in (SightingPhoto, Sighting))

    def photo_files(self) -> tuple[set[str], set[str]]:
        """The names and hashes of every stored photo a sighting holds (what the photo sweep keeps)."""
        with self.sessions() as session:
            rows = [*session.execute(select(Sighting.photo_name, Sighting.photo_sha256)),
                    *session.execute(select(SightingPhoto.photo_name, SightingPhoto.photo_sha256))]
        return {name for name, _ in rows}, {sha for _, sha in rows}

    # ---- the similar-sightings index follows these -------------------------------------------------------
    def ids_after(self, model_id: int, after_id: int) -> list[int]:
        with self.sessions() as session:
            return list(session.scalars(
                select(Sighting.id).where(Sighting.model_id == model_id, Sighting.id > after_id).order_by(Sighting.id)
            ))

    def vectors(self, ids: list[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        rows: list[Any] = []
        with self.sessions() as session:
            for start in range(0, len(ids), IN_CHUNK):
                rows += session.execute(
                    select(Sighting.id, Sighting.embedding).where(Sighting.id.in_(ids[start : start + IN_CHUNK]))
                ).all()
        return rows_to_arrays(rows, dim)

    def last_id(self, model_id: int, created_before: datetime) -> int:
        """The highest id of this model's sightings stored before `created_before` (0 when there are none)."""
        with self.sessions() as session:
            return int(session.scalar(select(func.max(Sighting.id)).where(
                Sighting.model_id == model_id, Sighting.created_at < created_before)) or 0)

    def vectors_upto(self, model_id: int, last: int, dim: int, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of this model's sightings with id <= `last`, in id order, `batch` rows at a time: a
        range scan on the key, so millions of rows stream without an IN list or one huge result."""
        after = 0
        while True:
            with self.sessions() as session:
                rows = session.execute(
                    select(Sighting.id, Sighting.embedding)
                    .where(Sighting.model_id == model_id, Sighting.id > after, Sighting.id <= last)
                    .order_by(Sighting.id).limit(batch)
                ).all()
            if not rows:
                return
            yield rows_to_arrays(list(rows), dim)
            after = rows[-1][0]
