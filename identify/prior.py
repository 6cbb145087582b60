"""Place and season: p(taxon | place, week) from occurrence records (GBIF downloads, CSV) and the service's own
confirmed sightings. The one owner of the `occurrence_counts` and `occurrence_imports` tables.

Records are counted per (H3 cell, ISO week, taxon) — the `h3` package, resolution 4 by default (cells of about
1,770 km²). The prior at a place and week (iNaturalist's geo model and Merlin's eBird filter, done with counts):

    local(t)    = records of t in the cell and its ring of neighbours, within ±2 weeks (circular over the year)
    regional(t) = records of t in the cell's parent REGION_LEVELS resolutions up (about 150 km across at the
                  default) and the parent's neighbours, any week
    overall(t)  = records of t anywhere
    p(t) = (local(t) + A · p_regional(t)) / (Σ local + A),  p_regional(t) = (regional(t) + B · p_overall(t)) / (Σ regional + B)

so a place with few records leans on its region, and a region with few on the whole collection. A taxon never
recorded nearby keeps a floor (FLOOR) when fused: rare is a reason for a curator to look, not a rejection.
`expected_here` is true when the taxon was recorded locally in season."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Iterable

from sqlalchemy import insert, select, update

from identify.errors import IdentifyError
from identify.observation import Place
from identify.schema import OccurrenceCount, OccurrenceImport, utcnow
from identify.storage import Store
from identify.taxonomy import Taxonomy

RESOLUTION = 4
NEIGHBOUR_RING = 1
REGION_LEVELS = 2
WEEK_WINDOW = 2
WEEKS = 53
# Pseudo-records added to a place from its region (A) and to a region from the whole collection (B). Sparse
# local counts are noise: with 10, records spread evenly (an uninformative prior) moved top-1 on the simulation
# by 3.0-3.7 points; with 100 by 0.0-1.2, while real ranges still decide between look-alikes.
SHRINK_LOCAL = 100.0
SHRINK_REGIONAL = 100.0
FLOOR = 1e-3  # the least a prior weighs in fusion (iNaturalist's epsilon)
CSV_COLUMNS = ("scientificName", "decimalLatitude", "decimalLongitude", "eventDate")


@dataclass(frozen=True)
class TaxonPrior:
    probability: float
    expected_here: bool


def cell_of(lat: float, lon: float, resolution: int = RESOLUTION) -> str:
    import h3

    return h3.latlng_to_cell(lat, lon, resolution)


def week_of(when: date | datetime) -> int:
    return int(when.isocalendar()[1])


class PriorModel:
    """Counts in memory, and the prior at a place and week from them (a few dozen dict look-ups)."""

    def __init__(self, counts: Iterable[tuple[str, int, str, int]], resolution: int = RESOLUTION) -> None:
        self.resolution = resolution
        self._by_cell_week: dict[tuple[str, int], Counter[str]] = {}
        self._by_region: dict[str, Counter[str]] = {}
        self._overall: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.add(counts)

    def _region(self, cell: str) -> str:
        import h3

        return h3.cell_to_parent(cell, max(self.resolution - REGION_LEVELS, 0))

    def add(self, counts: Iterable[tuple[str, int, str, int]]) -> None:
        """(cell, week, scientific name, count) rows, added to what is known."""
        with self._lock:
            for cell, week, taxon, count in counts:
                self._by_cell_week.setdefault((cell, week), Counter())[taxon] += count
                self._by_region.setdefault(self._region(cell), Counter())[taxon] += count
                self._overall[taxon] += count

    def add_records(self, records: Iterable[tuple[str, float, float, date | datetime]]) -> None:
        """Single records, as (scientific name, lat, lon, when): a confirmed sighting, a simulated record."""
        self.add((cell_of(lat, lon, self.resolution), week_of(when), taxon, 1) for taxon, lat, lon, when in records)

    @property
    def empty(self) -> bool:
        return not self._overall

    def at(self, place: Place, taxa: Iterable[str] | None = None) -> dict[str, TaxonPrior]:
        """p(taxon | place, week) for `taxa` (default: every taxon ever recorded); a taxon never recorded has
        none (the caller's floor applies)."""
        import h3

        centre = cell_of(place.lat, place.lon, self.resolution)
        week = week_of(place.when)
        local = [self._by_cell_week[key] for cell in h3.grid_disk(centre, NEIGHBOUR_RING)
                 for offset in range(-WEEK_WINDOW, WEEK_WINDOW + 1)
                 if (key := (cell, (week - 1 + offset) % WEEKS + 1)) in self._by_cell_week]
        regional = [self._by_region[r] for r in h3.grid_disk(self._region(centre), 1) if r in self._by_region]
        total_overall = sum(self._overall.values()) or 1
        total_regional = sum(sum(c.values()) for c in regional)
        total_local = sum(sum(c.values()) for c in local)
        priors = {}
        for taxon in (self._overall if taxa is None else (t for t in taxa if t in self._overall)):
            here = sum(c.get(taxon, 0) for c in local)
            around = sum(c.get(taxon, 0) for c in regional)
            p_regional = (around + SHRINK_REGIONAL * self._overall[taxon] / total_overall) / (total_regional + SHRINK_REGIONAL)
            priors[taxon] = TaxonPrior((here + SHRINK_LOCAL * p_regional) / (total_local + SHRINK_LOCAL), here > 0)
        return priors


def read_occurrence_table(path: Path):  # type: ignore[no-untyped-def]
    """The four columns we use, from a GBIF Darwin Core Archive (zip; python-dwca-reader) or a CSV/TSV file."""
    import pandas as pd

    if not path.is_file():
        raise IdentifyError("occurrences_not_found", f"no occurrence file at {path}")
    try:
        if path.suffix.lower() == ".zip":
            from dwca.read import DwCAReader

            with DwCAReader(str(path)) as archive:
                table = archive.pd_read(archive.core_file_location, usecols=lambda c: c in CSV_COLUMNS, dtype=str)
        else:
            separator = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
            table = pd.read_csv(path, sep=separator, usecols=lambda c: c in CSV_COLUMNS, dtype=str,
                                encoding="utf-8-sig", on_bad_lines="skip")
    except (ValueError, OSError, KeyError) as exc:
        raise IdentifyError("bad_occurrences", f"{path} does not read as occurrences ({exc})") from None
    missing = [c for c in CSV_COLUMNS if c not in table.columns]
    if missing:
        raise IdentifyError("bad_occurrences", f"{path} lacks column(s) {', '.join(missing)} (needs {', '.join(CSV_COLUMNS)})")
    return table


def aggregate(table, names: Taxonomy, resolution: int = RESOLUTION) -> tuple[list[tuple[str, int, str, int]], int]:  # type: ignore[no-untyped-def]
    """(cell, week, scientific name, count) rows from an occurrence table, and how many records were skipped
    (no usable position or date, or a name no taxonomy knows)."""
    import h3
    import pandas as pd

    lat = pd.to_numeric(table["decimalLatitude"], errors="coerce")
    lon = pd.to_numeric(table["decimalLongitude"], errors="coerce")
    when = pd.to_datetime(table["eventDate"].str.split("/").str[0], errors="coerce", utc=True, format="ISO8601")
    taxa = {name: names.resolve(name) for name in table["scientificName"].dropna().unique()}
    canonical = table["scientificName"].map(lambda n: taxon.scientific_name if (taxon := taxa.get(n)) else None)
    usable = lat.between(-90, 90) & lon.between(-180, 180) & when.notna() & canonical.notna()
    frame = pd.DataFrame({"lat": lat[usable], "lon": lon[usable], "week": when[usable].dt.isocalendar().week,
                          "taxon": canonical[usable]})
    frame["cell"] = [h3.latlng_to_cell(a, b, resolution) for a, b in zip(frame["lat"].tolist(), frame["lon"].tolist(), strict=True)]
    grouped = frame.groupby(["cell", "week", "taxon"]).size()
    rows = [(cell, int(week), taxon, int(count)) for (cell, week, taxon), count in grouped.items()]
    return rows, int((~usable).sum())


@dataclass(frozen=True)
class ImportReport:
    records: int
    imported: int
    skipped: int
    cells: int
    taxa: int

    def to_dict(self) -> dict[str, int]:
        return {"records": self.records, "imported": self.imported, "skipped": self.skipped, "cells": self.cells,
                "taxa": self.taxa}


class Occurrences:
    """The occurrence counts in SQL: imports add to them; the prior model is read from them."""

    def __init__(self, store: Store, names: Taxonomy | None = None, resolution: int = RESOLUTION) -> None:
        self.store = store
        self.names = names or Taxonomy()
        self.resolution = resolution

    def import_file(self, path: Path) -> ImportReport:
        """Count a file's records into SQL in one transaction (all or nothing): new (cell, week, taxon) rows
        are inserted, known ones have their counts raised, each in one executemany."""
        table = read_occurrence_table(path)
        rows, skipped = aggregate(table, self.names, self.resolution)
        with self.store.sessions.begin() as session:
            known = {(cell, week, taxon): (row_id, count) for row_id, cell, week, taxon, count in session.execute(
                select(OccurrenceCount.id, OccurrenceCount.cell, OccurrenceCount.week, OccurrenceCount.taxon,
                       OccurrenceCount.count).where(OccurrenceCount.resolution == self.resolution))}
            new = [{"resolution": self.resolution, "cell": c, "week": w, "taxon": t, "count": n}
                   for c, w, t, n in rows if (c, w, t) not in known]
            raised = [{"id": known[(c, w, t)][0], "count": known[(c, w, t)][1] + n}
                      for c, w, t, n in rows if (c, w, t) in known]
            for start in range(0, len(new), 50_000):
                session.execute(insert(OccurrenceCount), new[start : start + 50_000])
            if raised:  # an ORM bulk update by primary key: one executemany
                session.execute(update(OccurrenceCount), raised)
            session.add(OccurrenceImport(source=str(path), records=len(table), imported=len(table) - skipped,
                                         created_at=utcnow()))
        return ImportReport(len(table), len(table) - skipped, skipped, len({r[0] for r in rows}),
                            len({r[2] for r in rows}))

    def model(self, extra: Iterable[tuple[str, float, float, date | datetime]] = ()) -> PriorModel:
        """The prior model: the imported counts, plus records given as (scientific name, lat, lon, when) — the
        service's confirmed sightings."""
        with self.store.session() as session:
            rows = session.execute(select(OccurrenceCount.cell, OccurrenceCount.week, OccurrenceCount.taxon,
                                          OccurrenceCount.count)
                                   .where(OccurrenceCount.resolution == self.resolution)).all()
        model = PriorModel(((c, w, t, n) for c, w, t, n in rows), self.resolution)
        model.add_records(extra)
        return model
