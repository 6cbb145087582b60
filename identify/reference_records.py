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
from typing import Any, Callable, Sequence

from sqlalchemy import Select, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from identify.answers import taxon_json
from identify.errors import IdentifyError
from identify.framing import Crop
from identify.metadata import as_utc
from identify.references import ACTIVE, RETIRED, References, taxon_of_row
from identify.rules import MAX_TEXT
from identify.schema import Curator, ReferenceChange, ReferenceImage, Review, Sighting, Species
from identify.schema import Taxon as TaxonRow
from identify.storage import Store, key_of_public_id
from identify.taxonomy import Taxon

ACTIONS = {"relabel": None, "retire": RETIRED, "restore": ACTIVE}  # action -> the status it leaves
PROPOSE = "propose"  # a relabel waiting for a second curator: recorded, not applied
SOURCES = ("build", "review")
FLAGS = ("mislabelled", "near_duplicate", "thin")  # identify.reference_health's lists  # a build's photo, or a sighting a curator's review made a reference
STATUSES = (ACTIVE, RETIRED, "all")


@dataclass(frozen=True)
class SecondOpinion:
    """The one second-opinion rule, for a correction and a relabel alike: what would teach the service something
    new (`asks` names the rule that finds it so: a species no active reference has, a first record for the
    place) waits for a second curator where the deployment has at least two enabled curators; with one, it is
    taken and marked single-curator (history, queue filter, API), so a later curator can audit it."""

    asks: Callable[[str, Any], "str | None"]  # (label, a row with lat, lon, observed_at) -> the rule, or None
    curators: int  # enabled curators now

    @property
    def alone(self) -> bool:
        return self.curators < 2

    def verdict(self, label: str, where: Any) -> tuple[str | None, str | None]:
        """(the rule it waits under, the rule it is taken alone under): at most one of them is set."""
        rule = self.asks(label, where)
        if rule is None:
            return None, None
        return (None, rule) if self.alone else (rule, None)


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
    second_opinion: str | None = None  # the rule a proposal waits under, or a change was taken alone under

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "curator": self.curator, "reason": self.reason,
                "from_species": self.from_species, "to_species": self.to_species, "version": self.version,
                "at": _iso(self.at), "second_opinion": self.second_opinion,
                "single_curator": self.second_opinion if self.action != PROPOSE else None}


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
    label: str | None = None  # as its build wrote it ("Passer_domesticus"); None: its species' own name
    creator: str | None = None  # the photographer (a promoted sighting's observer)
    license: str | None = None  # the photo's licence, a name or URL
    changes: list[ChangeEntry] = field(default_factory=list)  # oldest first; only when opened one by one
    awaiting: ChangeEntry | None = None  # a relabel proposed by one curator, waiting for a second

    def to_dict(self, with_changes: bool = False) -> dict[str, Any]:
        """As the API (identify.web.reference_schemas.Reference, less its URLs) and `identify references --json` give it."""
        out: dict[str, Any] = {
            "id": self.public_id, "species": self.species, "label": self.label or self.species,
            "taxon": taxon_json(self.taxon), "status": self.status,
            "version": self.version, "source": self.source, "source_detail": self.source_detail,
            "sighting_id": self.sighting, "added_by": self.added_by, "lat": self.lat, "lon": self.lon,
            "observed_at": _iso(self.observed_at), "created_at": _iso(self.created_at),
            "crop": self.crop.to_dict() if self.crop else None,
            "provenance": self.provenance(),
            "awaiting_second_opinion": self.awaiting.to_dict() if self.awaiting else None}
        if with_changes:
            out["changes"] = [c.to_dict() for c in self.changes]
        return out

    def provenance(self) -> dict[str, str | None]:
        """Who took the photo, under which licence, where it came from and when: Darwin Core's Simple Multimedia
        terms (dcterms:creator, license, source, created), as an export of it would write them."""
        return {"creator": self.creator, "license": self.license,
                "source": self.source_detail or (f"sighting {self.sighting}" if self.sighting else None),
                "created": _iso(as_utc(self.observed_at))}  # SQLite keeps no zone: naive means UTC


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
        sighting, observer, added_by = None, None, None
        if row.sighting_id is not None:
            sighting, observer = session.execute(select(Sighting.public_id, Sighting.observer)
                                                 .where(Sighting.id == row.sighting_id)).first() or (None, None)
            added_by = session.scalar(select(Curator.name).join(Review, Review.curator_id == Curator.id)
                                      .where(Review.sighting_id == row.sighting_id, Review.added_as_reference)
                                      .order_by(Review.id).limit(1))
        return ReferenceRecord(
            id=row.id, public_id=row.public_id, species=species.name if species else "?", taxon=taxon,
            status=row.status, version=row.version, path=row.path, file_sha256=row.file_sha256,
            source="review" if row.sighting_id is not None else "build",
            source_detail=None if row.sighting_id is not None else row.source, sighting=sighting, added_by=added_by,
            lat=row.lat, lon=row.lon, observed_at=row.observed_at, created_at=row.created_at, crop=Crop.of(row.crop),
            creator=row.creator or observer,
            license=row.license, label=row.label,
            changes=self._changes(session, row.id) if with_changes else [],
            awaiting=self._awaiting(session, row.id))

    @classmethod
    def _awaiting(cls, session: Session, reference_id: int) -> ChangeEntry | None:
        """The relabel still waiting for a second curator: the reference's last change, if it is a proposal
        (any change after a proposal supersedes it)."""
        last = cls._changes(session, reference_id, last_only=True)
        return last[0] if last and last[0].action == PROPOSE else None

    @staticmethod
    def _changes(session: Session, reference_id: int, last_only: bool = False) -> list[ChangeEntry]:
        """The reference's history, oldest first (or only its last change)."""
        before, after = aliased(Species), aliased(Species)
        query = (select(ReferenceChange, Curator.name, before.name, after.name)
                 .outerjoin(Curator, Curator.id == ReferenceChange.curator_id)
                 .outerjoin(before, before.id == ReferenceChange.from_species_id)
                 .outerjoin(after, after.id == ReferenceChange.to_species_id)
                 .where(ReferenceChange.reference_id == reference_id))
        query = query.order_by(ReferenceChange.id.desc()).limit(1) if last_only else query.order_by(ReferenceChange.id)
        return [ChangeEntry(c.action, curator, c.reason, old, new, c.version, c.created_at, c.second_opinion)
                for c, curator, old, new in session.execute(query)]

    # ---- changing ---------------------------------------------------------------------------------------
    def change(self, public_id: str, action: str, reason: str, version: int | None, curator_id: int | None,
               species: str | None = None, model_classes: Sequence[str] = (), as_written: bool = False,
               second_opinion: SecondOpinion | None = None) -> ReferenceRecord:
        """Relabel (to `species`: a label, or any name of the taxonomy), retire or restore a reference, if it is
        still at `version`; the change and its reason are recorded in the same transaction. A relabel that would
        teach something new follows the one second-opinion rule: it waits as a proposal (the record's
        `awaiting`) until another curator relabels it the same way, or, with one enabled curator, is taken and
        marked single-curator."""
        reference_id = self.key_of(public_id)
        with self.sessions.begin() as session:
            label = self.references.label_named(session, species or "", model_classes, as_written) \
                if action == "relabel" else None
            waits, alone = self._second_opinion(session, reference_id, label, curator_id, second_opinion)
            if waits is not None:
                self._propose(session, reference_id, label or "", reason, version, curator_id, waits)
            else:
                self.change_in(session, reference_id, action, reason, version, curator_id, label,
                               second_opinion=alone)
        return self.get(public_id)

    def _second_opinion(self, session: Session, reference_id: int, label: str | None, curator_id: int | None,
                        rule: SecondOpinion | None) -> tuple[str | None, str | None]:
        """(the rule a relabel to `label` waits under, the rule it is taken alone under). Another curator's
        relabel to the species a proposal names is the second opinion: it applies. The proposer cannot agree
        with themselves while a second curator could."""
        row = session.get(ReferenceImage, reference_id)
        if label is None or rule is None or row is None:
            return None, None
        last = session.scalars(select(ReferenceChange).where(ReferenceChange.reference_id == reference_id)
                               .order_by(ReferenceChange.id.desc()).limit(1)).first()
        if last is None or last.action != PROPOSE or last.to_species_id != self.references.species_id(session, label):
            return rule.verdict(label, row)  # nothing proposed to this species: the rule decides
        if last.curator_id != curator_id:
            return None, None  # another curator agrees with the proposal: it applies
        if not rule.alone:
            raise IdentifyError("second_curator_needed", "this relabel awaits a second curator: another curator "
                                "must relabel it the same way before it applies", 403)
        return rule.verdict(label, row)

    def _propose(self, session: Session, reference_id: int, label: str, reason: str, version: int | None,
                 curator_id: int | None, rule: str) -> None:
        """Record a relabel that waits for a second curator; the reference keeps its label and its place in
        every index meanwhile."""
        row = session.get(ReferenceImage, reference_id, populate_existing=True)
        if row is None:
            raise IdentifyError("unknown_reference", "no such reference", 404)
        if row.version != version:
            raise self._stale(row)
        species_id = self.references.species_id(session, label)
        if row.status != ACTIVE or species_id == row.species_id:
            raise IdentifyError("bad_reference_change", "relabel needs an active reference and another species"
                                f" (reference {row.public_id} is {row.status}, labelled {row.species.name})")
        session.add(ReferenceChange(reference_id=reference_id, curator_id=curator_id, action=PROPOSE,
                                    from_species_id=row.species_id, to_species_id=species_id,
                                    reason=self._reason(reason), version=row.version, second_opinion=rule))

    @staticmethod
    def _reason(reason: str | None) -> str:
        reason = (reason or "").strip()
        if not reason or len(reason) > MAX_TEXT:
            raise IdentifyError("bad_reference_change", f"give the reason for the change (1-{MAX_TEXT} characters)")
        return reason

    def change_in(self, session: Session, reference_id: int, action: str, reason: str, version: int | None,
                  curator_id: int | None, label: str | None = None, review_id: int | None = None,
                  second_opinion: str | None = None) -> None:
        """`change` in the caller's transaction (a review that reopens a sighting moves its reference with it)."""
        if action not in ACTIONS:
            raise IdentifyError("bad_reference_change", f"action must be one of {', '.join(ACTIONS)}")
        reason = self._reason(reason)
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
                                    version=version, review_id=review_id, second_opinion=second_opinion))

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
