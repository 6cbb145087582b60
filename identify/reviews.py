"""Curator reviews and the review queue: the one owner of the `reviews` table and of a sighting's status once it
is reviewed. A review checks the sighting's optimistic `version`, writes the audit row, and (when it teaches)
promotes the photos to references through the reference set's one way in, all in one transaction.

A reviewed sighting can be reviewed again (corrected, confirmed, rejected) or reopened (back in the queue). The
references an earlier review made of its photos follow the new answer in the same transaction, through
identify.reference_records: relabelled to the new species, retired when the new review says the photo should not
teach (rejected, reopened, or "add as reference" off), restored when it teaches again. The reviews and the
reference changes stay in their audit trails.

The queue is the open sightings that are not confident, most uncertain first."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from identify.errors import IdentifyError
from identify.framing import Crop, Framing
from identify.observation import WhereAndWhen
from identify.photos import PhotoStore
from identify.reference_records import ReferenceRecords, SecondOpinion
from identify.references import ACTIVE, NewReference, References
from identify.rollup import RANK_GROUP
from identify.schema import ReferenceImage, Review, Sighting, SightingPhoto, Species
from identify.sightings import SightingRecord, SightingStore
from identify.storage import Store

ACTIONS = {"confirm": "confirmed", "correct": "corrected", "reject": "rejected", "reopen": "open"}
RECROP = "recrop"  # a curator's new crops: identified again, still open (identify.uploads.UploadPipeline.reframe)
AWAITING = "awaiting_second_opinion"  # the answer a curator gave waits for a second curator before it teaches
UNCERTAIN = ("needs_review", "no_match")
SINGLE_CURATOR_AGREED = "awaited"  # an answer that waited, taken by its own curator once they were the only one


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
    crops: tuple[Crop | None, ...] = ()  # recrop: each photo's new crop, in photo order (None: keep its own)

    @property
    def promotes(self) -> bool:
        return self.add_as_reference if self.add_as_reference is not None else self.action != "reject"


@dataclass(frozen=True)
class ReviewOutcome:
    sighting: SightingRecord
    reference_id: str | None  # the new (or reused) reference's public id when the photo was added as one
    second_opinion: str | None = None  # the rule that made it wait for a second curator
    single_curator: str | None = None  # the rule it was taken under by the deployment's only curator


class Reviews:
    def __init__(self, store: Store, sightings: SightingStore, references: References, photos: PhotoStore,
                 records: ReferenceRecords) -> None:
        self.sessions = store.sessions
        self.sightings = sightings
        self.references = references
        self.photos = photos
        self.records = records

    def queue(self, page: int, per_page: int) -> tuple[list[SightingRecord], int]:
        """Open sightings that are not confident at species (those confident only at a higher rank too, for a
        curator to name the species): audits (identify.audit) first, then answers awaiting a second curator, then
        the most uncertain; (one page, total)."""
        where = (((Sighting.status == "open") & (Sighting.decision.in_(UNCERTAIN) | Sighting.audit
                                                 | Sighting.risk_group.like(RANK_GROUP + "%")))
                 | (Sighting.status == AWAITING),)
        with self.sessions() as session:
            total = session.scalar(select(func.count()).select_from(Sighting).where(*where)) or 0
            ids = session.scalars(
                # audits first: a confident answer is the least uncertain, and would never be reached
                select(Sighting.id).where(*where).order_by(Sighting.audit.desc(), (Sighting.status == AWAITING).desc(),
                                                           Sighting.uncertainty.desc(), Sighting.id)
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

    def review(self, request: ReviewRequest, index_name: str, model_classes: Sequence[str],
               second_opinion: SecondOpinion | None = None) -> ReviewOutcome:
        """Apply a curator's review if `request.version` is current; else 409 with the current state.
        `second_opinion`: for a review that would teach, the rule (if any) that asks a second curator to agree
        first (ServiceConfig.second_opinion)."""
        if request.action not in ACTIONS:
            raise IdentifyError("bad_review", f"action must be one of {', '.join([*ACTIONS, RECROP])}")
        with self.sessions.begin() as session:
            sighting = session.get(Sighting, request.sighting_id)
            if sighting is None:
                raise IdentifyError("unknown_sighting", "no such sighting", 404)
            if sighting.version != request.version:  # stale first: what else is wrong may be someone else's doing
                raise self._stale(request)
            species_id, label = self._reviewed_species(session, sighting, request, model_classes)
            status = ACTIONS[request.action]
            if sighting.audit and status == "corrected" and species_id == sighting.species_id:
                status = "confirmed"  # named blind as the model had named it: the audit found it right
            teaches = request.promotes and label is not None and request.action != "reopen"
            awaiting, alone = None, None
            if sighting.status == AWAITING and request.action == "confirm":
                # the second curator (or, where only one is left, the same one): now it teaches
                status, alone = self._agreed(session, sighting, request, second_opinion)
            elif teaches and second_opinion is not None:
                awaiting, alone = second_opinion.verdict(label or "", sighting)
                if awaiting is not None:
                    status, teaches = AWAITING, False
            if not self.sightings.set_review_state(session, sighting.id, request.version, status, species_id):
                raise self._stale(request)
            review = Review(sighting_id=sighting.id, curator_id=request.curator_id, action=request.action,
                            species_id=species_id, note=request.note, version=request.version,
                            single_curator=alone)
            session.add(review)
            session.flush()  # its id: the reference changes it causes name it
            reference = self._teach(session, sighting, label if teaches else None, request, review, index_name)
            public_id = reference.public_id if reference is not None else None
        return ReviewOutcome(self.sightings.get(request.sighting_id), public_id, awaiting, alone)

    def recrop(self, sighting_id: int, version: int, curator_id: int, note: str | None, answer: dict[str, Any],
               photos: Sequence[tuple[Any, Framing, Any]]) -> SightingRecord:
        """Store the answer to a curator's re-crop (identified again by the caller) if the sighting is still
        open and at `version`; the review trail says who re-cropped it. It stays in the queue: a crop is a
        better look, not an answer."""
        with self.sessions.begin() as session:
            sighting = session.get(Sighting, sighting_id)
            if sighting is None:
                raise IdentifyError("unknown_sighting", "no such sighting", 404)
            request = ReviewRequest(sighting_id, curator_id, RECROP, version)
            if sighting.version != version:
                raise self._stale(request)
            if sighting.status != "open":
                raise IdentifyError("bad_review", f"sighting {sighting.public_id} is {sighting.status}: reopen it "
                                    "before re-cropping (a reviewed answer stays as the curator left it)")
            if not self.sightings.replace_answer(session, sighting_id, version, answer, photos):
                raise self._stale(request)
            session.add(Review(sighting_id=sighting_id, curator_id=curator_id, action=RECROP, version=version,
                               note=note))
        return self.sightings.get(sighting_id)

    def _teach(self, session: Session, sighting: Sighting, label: str | None, request: ReviewRequest,
               review: Review, index_name: str) -> ReferenceImage | None:
        """The photos as references of `label` (None: they teach nothing): new ones, or the ones an earlier
        review made, following this review."""
        earlier = self.records.promoted_from(session, sighting.id)
        if earlier:
            self._follow(session, earlier, label, request, review.id)
            return earlier[0] if label is not None else None
        if label is None:
            return None
        review.added_as_reference = True
        return session.get(ReferenceImage, self._promote(session, sighting, label, index_name))

    @staticmethod
    def _agreed(session: Session, sighting: Sighting, request: ReviewRequest,
                second_opinion: SecondOpinion | None) -> tuple[str, str | None]:
        """The status a second curator's agreement leaves (the one the first review asked for), and the rule it
        is taken alone under. The curator whose answer awaits cannot be its second opinion, unless they are
        now the deployment's only curator (the others disabled since): then it is taken, single-curator."""
        first = session.scalars(select(Review).where(Review.sighting_id == sighting.id)
                                .order_by(Review.id.desc()).limit(1)).first()
        status = "corrected" if first is not None and first.action == "correct" else "confirmed"
        if first is None or first.curator_id != request.curator_id:
            return status, None
        if second_opinion is None or second_opinion.alone:
            return status, SINGLE_CURATOR_AGREED
        raise IdentifyError("second_curator_needed", "this answer awaits a second curator: another curator "
                            "must agree before the photo becomes a reference", 403)

    def _follow(self, session: Session, references: list[ReferenceImage], label: str | None,
                request: ReviewRequest, review_id: int) -> None:
        """The references an earlier review made follow this one: relabelled to `label` (restored first if
        retired), or retired when `label` is None (the photo should not teach any more)."""
        why = f"review: {request.action}" + (f" ({request.note})" if request.note else "")
        for reference in references:
            session.refresh(reference)
            if label is None:
                if reference.status == ACTIVE:
                    self.records.change_in(session, reference.id, "retire", why, reference.version,
                                           request.curator_id, review_id=review_id)
                continue
            if reference.status != ACTIVE:
                self.records.change_in(session, reference.id, "restore", why, reference.version,
                                       request.curator_id, review_id=review_id)
                session.refresh(reference)
            if reference.species.name != label:
                self.records.change_in(session, reference.id, "relabel", why, reference.version,
                                       request.curator_id, label, review_id=review_id)

    def _stale(self, request: ReviewRequest) -> IdentifyError:
        current = self.sightings.get(request.sighting_id, with_reviews=False)
        error = IdentifyError("stale_version", f"sighting {current.public_id} is at version {current.version}, "
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
        if request.action == "reopen":  # back in the queue with its current answer; it teaches nothing meanwhile
            current = session.get(Species, sighting.species_id) if sighting.species_id is not None else None
            return (current.id, None) if current is not None else (None, None)
        if request.action == "confirm":
            current = session.get(Species, sighting.species_id) if sighting.species_id is not None else None
            if current is None:
                raise IdentifyError("bad_review", "nothing to confirm: the sighting has no species; use correct")
            if request.species and request.species != current.name:
                raise IdentifyError("bad_review", f"confirm keeps {current.name}; use correct to change the species")
            return current.id, current.name
        if not request.species:
            raise IdentifyError("bad_review", "correct needs the species")
        label = self.references.label_named(session, request.species, model_classes, request.as_written)
        return self.references.species_id(session, label), label

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
            crop=Crop.of(photo.crop), probabilities=photo.probabilities, individual=f"sighting {sighting.id}",
        ) for photo in photos])[0]
