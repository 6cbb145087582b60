"""The reference set as records a curator looks after: list and filter them, open one with its history,
relabel it, retire it (kept for the audit trail, out of every index and search) and restore it.

The one owner of `reference_changes`, the reference set's audit trail: every change names the curator (None
from the command line), the time, the reason and the version it was made against, never updated or deleted.
A reference's label and status change only through identify.references.References.set_state, with the optimistic
`version` check, in the same transaction as its change row; the change's id moves the stamp every worker's
live index follows (identify.vectors.live), so every worker and `predict` answer from the new state within
IDENTIFY_REFRESH_SECONDS. The outside world calls a reference by its public id, never by its SQL key."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Sequence

from sqlalchemy import Select, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from identify.answers import taxon_json
from identify.errors import IdentifyError
from identify.framing import Crop
from identify.references import ACTIVE, RETIRED, References, taxon_of_row
from identify.schema import Curator, ReferenceChange, ReferenceImage, Review, Sighting, Species
from identify.schema import Taxon as TaxonRow
from identify.storage import Store, key_of_public_id
from identify.taxonomy import Taxon

ACTIONS = {"relabel": None, "retire": RETIRED, "restore": ACTIVE}  # action -> the status it leaves
SOURCES = ("build", "review")
FLAGS = ("mislabelled", "near_duplicate", "thin")  # identify.reference_health's lists  # a build's photo, or a sighting a curator's review made a reference
STATUSES = (ACTIVE, RETIRED, "all")
MAX_REASON = 2000


@dataclass(frozen=True)
class ReferenceFilters:
    species: str | None = None  # a label, or any name of its taxon
    source: str | None = None  # build or review
    curator: str | None = None  # the curator who added it through a review or changed it
    status: str = ACTIVE  # active, retired or all
    since: datetime | None = None  # recorded at or after
    until: datetime | None = None  # recorded before
    flag: str | None = None  # a health flag (FLAGS): only the references the health check lists under it
    flagged: frozenset[str] | None = None  # the public ids the flag stands for (the service fills it in)


@dataclass(frozen=True)
class ChangeEntry:
    action: str
    curator: str | None  # None: from the command line
    reason: str
    from_species: str | None
    to_species: str | None
    version: int
    at: datetime


@dataclass(frozen=True)
class ReferenceRecord:
    id: int  # SQL's key: never shown outside
    public_id: str
    species: str
    taxon: Taxon | None
    status: str
    version: int
    path: str
    file_sha256: str
    source: str  # build or review
    source_detail: str | None  # the build's `source` column, or where the sighting came from
    sighting: str | None  # the public id of the sighting it was promoted from
    added_by: str | None  # the curator whose review made it a reference
    lat: float | None
    lon: float | None
    observed_at: datetime | None
    created_at: datetime
    crop: Crop | None = None  # the part of the photo its embedding was taken from
    changes: list[ChangeEntry] = field(default_factory=list)  # oldest first; only when opened one by one

    def to_dict(self, with_changes: bool = False) -> dict[str, Any]:
        """As the API (identify.web.reference_schemas.Reference, less its URLs) and `identify references --json` give it."""
        out: dict[str, Any] = {
            "id": self.public_id, "species": self.species, "taxon": taxon_json(self.taxon), "status": self.status,
            "version": self.version, "source": self.source, "source_detail": self.source_detail,
            "sighting_id": self.sighting, "added_by": self.added_by, "lat": self.lat, "lon": self.lon,
            "observed_at": _iso(self.observed_at), "created_at": _iso(self.created_at),
            "crop": self.crop.to_dict() if self.crop else None}
        if with_changes:
            out["changes"] = [{"action": c.action, "curator": c.curator, "reason": c.reason,
                               "from_species": c.from_species, "to_species": c.to_species, "version": c.version,
                               "at": _iso(c.at)} for c in self.changes]
        return out


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


class ReferenceRecords:
    def __init__(self, store: Store, references: References) -> None:
        self.sessions = store.sessions
        self.references = references

    def key_of(self, public_id: str) -> int:
        """The SQL key of the reference the outside world calls `public_id`; 404 when there is none."""
        return key_of_public_id(self.sessions, ReferenceImage, public_id, "unknown_reference", "reference")

    # ---- reading ---------------------------------------------------------------------------------------
    def page(self, filters: ReferenceFilters, page: int, per_page: int) -> tuple[list[ReferenceRecord], int]:
        """One page of the references that pass the filters, newest first, and how many pass."""
        where = self._where(filters)
        with self.sessions() as session:
            total = session.scalar(select(func.count()).select_from(ReferenceImage).where(*where)) or 0
            ids = session.scalars(select(ReferenceImage.id).where(*where)
                                  .order_by(ReferenceImage.created_at.desc(), ReferenceImage.id.desc())
                                  .offset((page - 1) * per_page).limit(per_page)).all()
            return [self._record(session, i) for i in ids], total

    def get(self, public_id: str) -> ReferenceRecord:
        """One reference with its history."""
        with self.sessions() as session:
            return self._record(session, self.key_of(public_id), with_changes=True)

    def _where(self, filters: ReferenceFilters) -> list:  # type: ignore[type-arg]
        if filters.status not in STATUSES:
            raise IdentifyError("bad_field", f"status is one of {', '.join(STATUSES)}")
        if filters.source is not None and filters.source not in SOURCES:
            raise IdentifyError("bad_field", f"source is one of {', '.join(SOURCES)}")
        where = [] if filters.status == "all" else [ReferenceImage.status == filters.status]
        if filters.source is not None:
            promoted = ReferenceImage.sighting_id.is_not(None)
            where.append(promoted if filters.source == "review" else ~promoted)
        if filters.species:
            where.append(ReferenceImage.species_id.in_(self._species_named(filters.species)))
        if filters.curator:
            where.append(self._touched_by(filters.curator))
        if filters.flag is not None and filters.flag not in FLAGS:
            raise IdentifyError("bad_field", f"flag is one of {', '.join(FLAGS)}")
        if filters.flagged is not None:
            where.append(ReferenceImage.public_id.in_(sorted(filters.flagged)))
        if filters.since is not None:
            where.append(ReferenceImage.created_at >= filters.since)
        if filters.until is not None:
            where.append(ReferenceImage.created_at < filters.until)
        return where

    def _species_named(self, name: str) -> Select:  # type: ignore[type-arg]
        """Ids of the labels called `name`, or naming the taxon any authority calls `name`."""
        taxon = self.references.taxonomy.resolve(name)
        named = [func.lower(Species.name) == name.lower()]
        if taxon is not None:
            named.append(TaxonRow.scientific_name == taxon.scientific_name)
        return (select(Species.id).outerjoin(TaxonRow, TaxonRow.id == Species.taxon_id).where(or_(*named)))

    @staticmethod
    def _touched_by(curator: str):  # type: ignore[no-untyped-def]
        """The curator's review made it a reference, or the curator changed it since."""
        added = exists().where(Review.sighting_id == ReferenceImage.sighting_id, Review.added_as_reference,
                               Review.curator_id == Curator.id, Curator.name == curator)
        changed = exists().where(ReferenceChange.reference_id == ReferenceImage.id,
                                 ReferenceChange.curator_id == Curator.id, Curator.name == curator)
        return or_(added, changed)

    def _record(self, session: Session, reference_id: int, with_changes: bool = False) -> ReferenceRecord:
        row = session.get(ReferenceImage, reference_id)
        if row is None:
            raise IdentifyError("unknown_reference", "no such reference", 404)
        species = session.get(Species, row.species_id)
        taxon = taxon_of_row(session.get(TaxonRow, species.taxon_id)) if species and species.taxon_id else None
        sighting, added_by = None, None
        if row.sighting_id is not None:
            sighting = session.scalar(select(Sighting.public_id).where(Sighting.id == row.sighting_id))
            added_by = session.scalar(select(Curator.name).join(Review, Review.curator_id == Curator.id)
                                      .where(Review.sighting_id == row.sighting_id, Review.added_as_reference)
                                      .order_by(Review.id).limit(1))
        return ReferenceRecord(
            id=row.id, public_id=row.public_id, species=species.name if species else "?", taxon=taxon,
            status=row.status, version=row.version, path=row.path, file_sha256=row.file_sha256,
            source="review" if row.sighting_id is not None else "build",
            source_detail=None if row.sighting_id is not None else row.source, sighting=sighting, added_by=added_by,
            lat=row.lat, lon=row.lon, observed_at=row.observed_at, created_at=row.created_at, crop=Crop.of(row.crop),
            changes=self._changes(session, row.id) if with_changes else [])

    @staticmethod
    def _changes(session: Session, reference_id: int) -> list[ChangeEntry]:
        before, after = aliased(Species), aliased(Species)
        rows = session.execute(
            select(ReferenceChange, Curator.name, before.name, after.name)
            .outerjoin(Curator, Curator.id == ReferenceChange.curator_id)
            .outerjoin(before, before.id == ReferenceChange.from_species_id)
            .outerjoin(after, after.id == ReferenceChange.to_species_id)
            .where(ReferenceChange.reference_id == reference_id).order_by(ReferenceChange.id))
        return [ChangeEntry(c.action, curator, c.reason, old, new, c.version, c.created_at)
                for c, curator, old, new in rows]

    # ---- changing ---------------------------------------------------------------------------------------
    def change(self, public_id: str, action: str, reason: str, version: int | None, curator_id: int | None,
               species: str | None = None, model_classes: Sequence[str] = (), as_written: bool = False) -> ReferenceRecord:
        """Relabel (to `species`: a label, or any name of the taxonomy), retire or restore a reference, if it is
        still at `version`; the change and its reason are recorded in the same transaction."""
        reference_id = self.key_of(public_id)
        with self.sessions.begin() as session:
            label = self.references.label_named(session, species or "", model_classes, as_written) \
                if action == "relabel" else None
            self.change_in(session, reference_id, action, reason, version, curator_id, label)
        return self.get(public_id)

    def change_in(self, session: Session, reference_id: int, action: str, reason: str, version: int | None,
                  curator_id: int | None, label: str | None = None, review_id: int | None = None) -> None:
        """`change` in the caller's transaction (a review that reopens a sighting moves its reference with it)."""
        if action not in ACTIONS:
            raise IdentifyError("bad_reference_change", f"action must be one of {', '.join(ACTIONS)}")
        reason = (reason or "").strip()
        if not reason or len(reason) > MAX_REASON:
            raise IdentifyError("bad_reference_change", f"give the reason for the change (1-{MAX_REASON} characters)")
        row = session.get(ReferenceImage, reference_id, populate_existing=True)  # as SQL has it now
        if row is None:
            raise IdentifyError("unknown_reference", "no such reference", 404)
        if version is None and action == "restore":  # restoring twice is refused anyway: no version needed
            version = row.version
        if row.version != version:
            raise self._stale(row)
        species_id = self.references.species_id(session, label) if label is not None else row.species_id
        status = ACTIONS[action] or row.status
        if action == "relabel" and (status == RETIRED or species_id == row.species_id):
            raise IdentifyError("bad_reference_change", "relabel needs an active reference and another species"
                                f" (reference {row.public_id} is {row.status}, labelled {row.species.name})")
        if action != "relabel" and status == row.status:
            raise IdentifyError("bad_reference_change", f"reference {row.public_id} is already {row.status}")
        previous = row.species_id
        if not self.references.set_state(session, reference_id, row.version, species_id, status):
            raise self._stale(row)
        session.add(ReferenceChange(reference_id=reference_id, curator_id=curator_id, action=action,
                                    from_species_id=previous, to_species_id=species_id, reason=reason,
                                    version=version, review_id=review_id))

    @staticmethod
    def _stale(row: ReferenceImage) -> IdentifyError:
        return IdentifyError("stale_version", f"reference {row.public_id} changed since you loaded it (it is at "
                             f"version {row.version}): reload it and try again", 409)

    def active_ids(self, label: str) -> list[int]:
        """SQL keys of the active references of the species `label` names: labelled so, or with another label of
        the same taxon ("cock" and "Gallus gallus"). A search restricted to them finds its nearest."""
        with self.sessions() as session:
            taxon_id = session.scalar(select(Species.taxon_id).where(Species.name == label))
            same = Species.name == label if taxon_id is None else (Species.name == label) | (Species.taxon_id == taxon_id)
            return list(session.scalars(select(ReferenceImage.id).join(Species, Species.id == ReferenceImage.species_id)
                                        .where(same, ReferenceImage.status == ACTIVE)))

    def promoted_from(self, session: Session, sighting_id: int) -> list[ReferenceImage]:
        """The references a sighting's review made of its photos, in id order."""
        return list(session.scalars(select(ReferenceImage).where(ReferenceImage.sighting_id == sighting_id)
                                    .order_by(ReferenceImage.id)))
