"""Curator reviews and the review queue: the one owner of the `reviews` table and of a sighting's status once it
is reviewed. A review checks the sighting's optimistic `version`, writes the audit row, and (when it teaches)
promotes the photos to references through the reference set's one way in, all in one transaction.

The queue is the open sightings that are not confident, most uncertain first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from identify.errors import IdentifyError
from identify.observation import WhereAndWhen
from identify.photos import PhotoStore
from identify.references import NewReference, References
from identify.schema import Review, Sighting, SightingPhoto, Species
from identify.sightings import SightingRecord, SightingStore
from identify.storage import Store

ACTIONS = {"confirm": "confirmed", "correct": "corrected", "reject": "rejected"}
UNCERTAIN = ("needs_review", "no_match")


@dataclass(frozen=True)
class ReviewRequest:
    sighting_id: int
    curator_id: int
    action: str
    version: int
    species: str | None = None  # correct: a label, a common or scientific name of any authority
    note: str | None = None
    add_as_reference: bool | None = None  # None: yes, unless rejected (a curator's answer teaches at once)
    as_written: bool = False  # correct: take a name no taxonomy knows, as written

    @property
    def promotes(self) -> bool:
        return self.add_as_reference if self.add_as_reference is not None else self.action != "reject"


@dataclass(frozen=True)
class ReviewOutcome:
    sighting: SightingRecord
    reference_id: int | None  # the new (or reused) reference when the photo was added as one


class Reviews:
    def __init__(self, store: Store, sightings: SightingStore, references: References, photos: PhotoStore) -> None:
        self.sessions = store.sessions
        self.sightings = sightings
        self.references = references
        self.photos = photos

    def queue(self, page: int, per_page: int) -> tuple[list[SightingRecord], int]:
        """Open sightings that are not confident, and audits (identify.audit) first, then most uncertain first;
        (one page, total)."""
        where = (Sighting.status == "open", Sighting.decision.in_(UNCERTAIN) | Sighting.audit)
        with self.sessions() as session:
            total = session.scalar(select(func.count()).select_from(Sighting).where(*where)) or 0
            ids = session.scalars(
                # audits first: a confident answer is the least uncertain, and would never be reached
                select(Sighting.id).where(*where).order_by(Sighting.audit.desc(), Sighting.uncertainty.desc(),
                                                           Sighting.id)
                .offset((page - 1) * per_page).limit(per_page)
            ).all()
            return [self.sightings.record_in(session, i, with_reviews=False) for i in ids], total

    def reviewed(self, model_id: int) -> list[tuple[int, Path, str]]:
        """(sighting id, cover photo file, the curator's species label) of every sighting of `model_id` a curator
        confirmed or corrected: the deployment's own labelled photos (`evaluate --from-reviews`)."""
        with self.sessions() as session:
            rows = session.execute(
                select(Sighting.id, Sighting.photo_name, Species.name)
                .join(Species, Species.id == Sighting.species_id)
                .where(Sighting.model_id == model_id, Sighting.status.in_(("confirmed", "corrected")))
                .order_by(Sighting.id)).all()
        return [(int(i), self.photos.photo_path(name), label) for i, name, label in rows]

    def review(self, request: ReviewRequest, index_name: str, model_classes: Sequence[str]) -> ReviewOutcome:
        """Apply a curator's review if `request.version` is current; else 409 with the current state."""
        if request.action not in ACTIONS:
            raise IdentifyError("bad_review", f"action must be one of {', '.join(ACTIONS)}")
        with self.sessions.begin() as session:
            sighting = session.get(Sighting, request.sighting_id)
            if sighting is None:
                raise IdentifyError("unknown_sighting", f"no sighting {request.sighting_id}", 404)
            if sighting.version != request.version:  # stale first: what else is wrong may be someone else's doing
                raise self._stale(request)
            species_id, label = self._reviewed_species(session, sighting, request, model_classes)
            status = ACTIONS[request.action]
            if sighting.audit and status == "corrected" and species_id == sighting.species_id:
                status = "confirmed"  # named blind as the model had named it: the audit found it right
            if not self.sightings.set_review_state(session, sighting.id, request.version, status, species_id):
                raise self._stale(request)
            reference_id = None
            if request.promotes and label is not None:
                reference_id = self._promote(session, sighting, label, index_name)
            session.add(Review(sighting_id=sighting.id, curator_id=request.curator_id, action=request.action,
                               species_id=species_id, note=request.note, version=request.version,
                               added_as_reference=reference_id is not None))
        return ReviewOutcome(self.sightings.get(request.sighting_id), reference_id)

    def _stale(self, request: ReviewRequest) -> IdentifyError:
        current = self.sightings.get(request.sighting_id, with_reviews=False)
        error = IdentifyError("stale_version", f"sighting {request.sighting_id} is at version {current.version}, "
                              f"not {request.version}: someone reviewed it meanwhile", 409)
        error.details = {"sighting": current}
        return error

    def _reviewed_species(self, session: Session, sighting: Sighting, request: ReviewRequest,
                          model_classes: Sequence[str]) -> tuple[int | None, str | None]:
        """(species id, label) the review leaves the sighting with."""
        if request.action == "reject":
            if request.add_as_reference:
                raise IdentifyError("bad_review", "a rejected sighting cannot become a reference")
            return None, None
        if request.action == "confirm":
            current = session.get(Species, sighting.species_id) if sighting.species_id is not None else None
            if current is None:
                raise IdentifyError("bad_review", "nothing to confirm: the sighting has no species; use correct")
            if request.species and request.species != current.name:
                raise IdentifyError("bad_review", f"confirm keeps {current.name}; use correct to change the species")
            return current.id, current.name
        if not request.species:
            raise IdentifyError("bad_review", "correct needs the species")
        label = self._corrected_label(session, request, model_classes)
        return self.references.species_id(session, label), label

    def _corrected_label(self, session: Session, request: ReviewRequest, model_classes: Sequence[str]) -> str:
        """The label a correction names: a known label as it is; else any name of the taxonomy (common or
        scientific, any authority), as the label that already stands for its taxon; else, only when asked,
        the name as written."""
        name = request.species or ""
        if name in model_classes or session.scalar(select(Species.id).where(Species.name == name)) is not None:
            return name
        taxon = self.references.taxonomy.resolve(name)
        if taxon is not None:
            return self.references.label_for_taxon(session, taxon, preferred=model_classes)
        if request.as_written:
            return name
        close = ", ".join(s.name for s in self.references.taxonomy.suggest(name, limit=5))
        error = IdentifyError("unknown_species", f"{name!r} is in no bird taxonomy"
                              + (f" (did you mean: {close}?)" if close else "")
                              + "; to use it anyway, send as_written", 400)
        error.details = {"suggestions": close.split(", ") if close else []}
        raise error

    def _promote(self, session: Session, sighting: Sighting, label: str, index_name: str) -> int:
        """Make every photo of the sighting a reference of `index_name`, each with the embedding it was
        identified by, in the review's transaction: through the reference set's one way in. Returns the
        cover's reference id."""
        index_id = self.references.index_of(session, index_name, sighting.model_id)
        photos = session.scalars(select(SightingPhoto).where(SightingPhoto.sighting_id == sighting.id)
                                 .order_by(SightingPhoto.position)).all()
        return self.references.add(session, index_id, sighting.model_id, [NewReference(
            file_sha256=photo.photo_sha256, path=str(self.photos.photo_path(photo.photo_name)), species=label,
            vector=photo.embedding, where=WhereAndWhen.stored(sighting.lat, sighting.lon, sighting.observed_at),
            source=f"sighting {sighting.id}", sighting_id=sighting.id,
        ) for photo in photos])[0]
