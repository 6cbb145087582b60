"""Finding sightings by what they say: the list of recent sightings (filters, pages) and the set of ids the
similar-sightings search is restricted to. Reads only; identify.sightings owns the rows.

A species filter takes any name of a taxon (a label, a common or scientific name of any authority); a taxon
of a higher rank (a genus, a family, an order, by either kind of name) matches every sighting inside it. The
public's area filter tests the generalised positions it is shown, never the exact ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

import numpy as np
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from identify.errors import IdentifyError
from identify.metadata import GENERALISED_STEP, BoundingBox, generalised
from identify.references import References
from identify.schema import Review, Sighting, Species
from identify.schema import Taxon as TaxonRow
from identify.sightings import SightingRecord, SightingStore
from identify.storage import Store

DECISIONS = ("confident", "needs_review", "no_match")
STATUSES = ("open", "confirmed", "corrected", "rejected", "awaiting_second_opinion")
HIGHER_RANKS = {"genus": TaxonRow.genus, "family": TaxonRow.family, "order": TaxonRow.order_name}


@dataclass(frozen=True)
class SightingFilters:
    species: str | None = None  # the current answer's label, or any name of its taxon or of a taxon above it
    genus: str | None = None  # of the current answer's taxon
    family: str | None = None
    start: datetime | None = None  # on or after (observed_at, else upload time)
    end: datetime | None = None  # on or before
    bbox: BoundingBox | None = None
    exact_places: bool = True  # False for the public: bbox matches the generalised positions it is shown
    decision: str | None = None  # the model's: confident, needs_review, no_match
    status: str | None = None  # where curation stands: open, confirmed, corrected, rejected, awaiting...
    single_curator: bool = False  # only those a lone curator reviewed where the rule would ask a second

    def __post_init__(self) -> None:
        if self.decision is not None and self.decision not in DECISIONS:
            raise IdentifyError("bad_filter", f"decision is one of {', '.join(DECISIONS)}")
        if self.status is not None and self.status not in STATUSES:
            raise IdentifyError("bad_filter", f"status is one of {', '.join(STATUSES)}")

    @property
    def any(self) -> bool:
        values = (self.species, self.genus, self.family, self.start, self.end, self.bbox, self.decision, self.status)
        return any(value is not None for value in values) or self.single_curator


def _when(model: type[Sighting]) -> Any:
    return func.coalesce(model.observed_at, model.created_at)


class SightingSearch:
    def __init__(self, store: Store, references: References, sightings: SightingStore) -> None:
        self.sessions = store.sessions
        self.references = references
        self.sightings = sightings

    def matching_ids(self, model_id: int, filters: SightingFilters) -> np.ndarray:
        """Ids of the sightings of `model_id` that pass the filters (the FAISS search is then restricted to
        them)."""
        with self.sessions() as session:
            query = self._filtered(session, select(Sighting.id).where(Sighting.model_id == model_id), filters)
            return np.array(self._passing(session, query, filters), dtype=np.int64)

    def page(self, filters: SightingFilters, page: int, per_page: int) -> tuple[list[SightingRecord], int]:
        """One page of the sightings that pass the filters, the latest upload first; (page, total)."""
        with self.sessions() as session:
            query = self._filtered(session, select(Sighting.id), filters).order_by(Sighting.created_at.desc(),
                                                                                   Sighting.id.desc())
            if filters.bbox is not None and not filters.exact_places:  # tested row by row: page in Python
                ids = self._passing(session, query, filters)
                total, chosen = len(ids), ids[(page - 1) * per_page: page * per_page]
            else:
                total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
                chosen = list(session.scalars(query.offset((page - 1) * per_page).limit(per_page)))
            return [self.sightings.record_in(session, i, with_reviews=False) for i in chosen], total

    def _filtered(self, session: Session, query: Select[Any], filters: SightingFilters) -> Select[Any]:
        if filters.species is not None:
            query = query.where(Sighting.species_id.in_(self._species_ids_named(session, filters.species)))
        if filters.genus is not None or filters.family is not None:
            taxa = select(Species.id).join(TaxonRow, TaxonRow.id == Species.taxon_id)
            if filters.genus is not None:
                taxa = taxa.where(func.lower(TaxonRow.genus) == filters.genus.strip().lower())
            if filters.family is not None:
                taxa = taxa.where(func.lower(TaxonRow.family) == filters.family.strip().lower())
            query = query.where(Sighting.species_id.in_(taxa))
        if filters.start is not None:
            query = query.where(_when(Sighting) >= filters.start)
        if filters.end is not None:
            query = query.where(_when(Sighting) <= filters.end)
        if filters.decision is not None:
            query = query.where(Sighting.decision == filters.decision)
        if filters.status is not None:
            query = query.where(Sighting.status == filters.status)
        if filters.single_curator:
            query = query.where(Sighting.id.in_(select(Review.sighting_id).where(Review.single_curator.is_not(None))))
        if filters.bbox is not None:
            box = filters.bbox if filters.exact_places else filters.bbox.widened(GENERALISED_STEP)
            query = query.where(Sighting.lat >= box.min_lat, Sighting.lat <= box.max_lat)
            if box.min_lon <= box.max_lon:
                query = query.where(Sighting.lon >= box.min_lon, Sighting.lon <= box.max_lon)
            else:  # the box crosses the antimeridian
                query = query.where((Sighting.lon >= box.min_lon) | (Sighting.lon <= box.max_lon))
        return query

    @staticmethod
    def _passing(session: Session, query: Select[Any], filters: SightingFilters) -> list[int]:
        """The ids the query selects; for the public's area filter only those whose generalised square's centre
        lies in the box (SQL has no portable floor), and never a hidden position."""
        if filters.bbox is None or filters.exact_places:
            return [int(i) for i in session.scalars(query)]
        rows = session.execute(query.add_columns(Sighting.lat, Sighting.lon, Sighting.hide_location)).all()
        return [int(row[0]) for row in rows
                if not row.hide_location and filters.bbox.holds(*generalised(row.lat, row.lon)[:2])]

    def _species_ids_named(self, session: Session, name: str) -> Sequence[int]:
        """The species a filter names: the label itself, every label of the taxon the name resolves to, and for
        a genus, family or order every species inside it."""
        exact = session.scalar(select(Species.id).where(Species.name == name))
        taxon = self.references.taxonomy.resolve(name)
        if taxon is None:
            if exact is None:
                raise IdentifyError("unknown_species", f"no species or other taxon is named {name!r}: try its "
                                    "common or scientific name")
            return [exact]
        column = HIGHER_RANKS.get(taxon.rank)
        same = TaxonRow.scientific_name == taxon.scientific_name
        inside = same | (func.lower(column) == taxon.scientific_name.lower()) if column is not None else same
        found = session.scalars(select(Species.id).join(TaxonRow, TaxonRow.id == Species.taxon_id).where(inside))
        return list({*found, *([exact] if exact is not None else [])})
