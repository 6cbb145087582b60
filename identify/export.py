"""Sightings as Darwin Core, for GBIF and atlas projects: an archive (occurrence core, meta.xml, eml.xml) or the
occurrence table alone as CSV.

Written with the standard library: the Python writers on PyPI do not fit (dwcahandler pins pytest < 9 and
flake8 as run-time dependencies; dwca-writer, last released in 2023, needs pkg_resources, gone from current
setuptools). The tests read every archive back with python-dwca-reader, as GBIF's tools would.

One row per sighting with a species (rejected ones have none): `HumanObservation` when a curator confirmed or
corrected it, `MachineObservation` otherwise (only with `--status all`)."""

from __future__ import annotations

import csv
import io
import os
import uuid
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from xml.etree import ElementTree as ET

from sqlalchemy import select

from identify.errors import IdentifyError
from identify.metadata import as_utc, generalised
from identify.references import taxon_of_row
from identify.rollup import answered_taxon
from identify.schema import Curator, Model, Prediction, Review, Sighting, Species
from identify.schema import Taxon as TaxonRow
from identify.sightings import observed_of
from identify.taxonomy import Taxon
from identify.storage import Store

DWC = "http://rs.tdwg.org/dwc/terms/"
OCCURRENCE = DWC + "Occurrence"
TERMS = (
    "occurrenceID", "basisOfRecord", "scientificName", "taxonRank", "vernacularName", "kingdom", "class", "order",
    "family", "genus", "eventDate", "decimalLatitude", "decimalLongitude", "geodeticDatum",
    "coordinateUncertaintyInMeters", "recordedBy", "identifiedBy", "dateIdentified",
    "identificationVerificationStatus", "identificationRemarks", "occurrenceRemarks", "associatedMedia",
)
# Numbers this module formats itself: a leading minus there is a sign, not a formula.
NUMERIC_TERMS = {"decimalLatitude", "decimalLongitude", "coordinateUncertaintyInMeters"}
# What makes a spreadsheet read a cell as a formula (OWASP, CSV injection): the first character, or the first
# after leading spaces, which some spreadsheets skip.
FORMULA_STARTS = ("=", "+", "-", "@")
CONTROL_STARTS = ("\t", "\r", "\n")
FORMATS = ("dwca", "csv")
STATUSES = ("confirmed", "all")


@dataclass(frozen=True)
class ExportRow:
    """What a Darwin Core record needs of a sighting (identify.sightings gives these)."""

    sighting_id: int
    status: str
    label: str
    taxon: Any  # identify.taxonomy.Taxon | None
    observed: Any  # identify.metadata.ObservedTime | None
    lat: float | None
    lon: float | None
    observer: str | None
    note: str | None
    photo_name: str
    model_name: str
    model_sha256: str
    decision: str
    score: float | None
    curator: str | None  # who confirmed or corrected it last
    reviewed_at: datetime | None
    created_at: datetime
    hide_location: bool = False  # the uploader asked: exported generalised, as the public sees it
    coordinate_uncertainty_m: float | None = None  # as the observer's device stated it


def export_rows(store: Store, status: str) -> list[ExportRow]:
    """Sightings with a species, for Darwin Core: confirmed and corrected ones, or (`all`) open ones too."""
    statuses = ("confirmed", "corrected") if status == "confirmed" else ("confirmed", "corrected", "open")
    with store.sessions() as session:
        rows = session.execute(
            select(Sighting, Species.name, TaxonRow, Model.name, Model.sha256)
            .join(Species, Species.id == Sighting.species_id).join(Model, Model.id == Sighting.model_id)
            .outerjoin(TaxonRow, TaxonRow.id == Species.taxon_id)
            .where(Sighting.status.in_(statuses)).order_by(Sighting.id)
        ).all()
        reviewed = {sighting_id: (curator, when) for sighting_id, curator, when in session.execute(
            select(Review.sighting_id, Curator.name, Review.created_at).join(Curator, Curator.id == Review.curator_id)
            .where(Review.action.in_(("confirm", "correct"))).order_by(Review.id))}  # the last one wins
        tops = {sighting_id: score for sighting_id, score in session.execute(
            select(Prediction.sighting_id, Prediction.score).where(Prediction.rank == 1))}
    return [ExportRow(s.id, s.status, *_answered(s, label, taxon_of_row(taxon)), observed_of(s), s.lat, s.lon, s.observer, s.note,
                      s.photo_name, model_name, model_sha256, s.decision, tops.get(s.id),
                      reviewed.get(s.id, (None, None))[0], as_utc(reviewed.get(s.id, (None, None))[1]),
                      as_utc(s.created_at), bool(s.hide_location), s.coordinate_uncertainty_m)  # type: ignore[arg-type]
            for s, label, taxon, model_name, model_sha256 in rows]


def _answered(sighting: Sighting, label: str, taxon: Taxon | None) -> tuple[str, Taxon | None]:
    """(label, taxon) a sighting is recorded as: an open one confident only at a higher rank as that taxon
    (taxonRank genus, family or order), else its species."""
    ranked = answered_taxon(sighting.status, sighting.decision, sighting.rollup)
    return (ranked.scientific_name, ranked) if ranked is not None else (label, taxon)


def installation_id(data_dir: Path) -> uuid.UUID:
    """This installation's id, made once into the data dir: the namespace of stable occurrenceIDs."""
    path = data_dir / "installation_id"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return uuid.UUID(path.read_text().strip())
    with os.fdopen(descriptor, "w") as handle:
        handle.write(str(uuid.uuid4()))
    return uuid.UUID(path.read_text().strip())


def _iso(moment: datetime | None) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds") if moment else ""


def record(row: ExportRow, namespace: uuid.UUID, media_base: str) -> dict[str, str]:
    """The Darwin Core terms of one sighting."""
    taxon = row.taxon
    human = row.status in ("confirmed", "corrected")
    lat, lon, uncertainty = row.lat, row.lon, row.coordinate_uncertainty_m
    if row.hide_location and lat is not None and lon is not None:
        lat, lon, radius = generalised(lat, lon)
        uncertainty = max(radius, uncertainty or 0.0)
    remarks = (f"identified by the model {row.model_name} ({row.model_sha256[:12]}): decision {row.decision}"
               + (f", score {row.score:.3f}" if row.score is not None else "")
               + (f"; {row.status} by a curator" if human else ""))
    return {
        "occurrenceID": f"urn:uuid:{uuid.uuid5(namespace, f'sighting/{row.sighting_id}')}",
        "basisOfRecord": "HumanObservation" if human else "MachineObservation",
        "scientificName": taxon.scientific_name if taxon else row.label.replace("_", " "),
        "taxonRank": taxon.rank if taxon else "",
        "vernacularName": (taxon.common_name or "") if taxon else "",
        "kingdom": "Animalia" if taxon else "",
        "class": "Aves" if taxon else "",
        "order": (taxon.order or "") if taxon else "",
        "family": (taxon.family or "") if taxon else "",
        "genus": (taxon.genus or "") if taxon else "",
        "eventDate": row.observed.isoformat() if row.observed else "",
        "decimalLatitude": f"{lat:.6f}" if lat is not None else "",
        "decimalLongitude": f"{lon:.6f}" if lon is not None else "",
        "geodeticDatum": "WGS84" if lat is not None else "",
        # Empty when exact: phones and cameras do not record it in EXIF; the square's radius when generalised.
        "coordinateUncertaintyInMeters": str(uncertainty) if uncertainty else "",
        "recordedBy": row.observer or "",
        "identifiedBy": row.curator if human and row.curator else f"identify ({row.model_name})",
        "dateIdentified": _iso(row.reviewed_at if human and row.reviewed_at else row.created_at),
        "identificationVerificationStatus": "verified by a curator" if human else "unverified",
        "identificationRemarks": remarks,
        "occurrenceRemarks": row.note or "",
        "associatedMedia": f"{media_base.rstrip('/')}/media/photos/{row.photo_name}",
    }


def spreadsheet_safe(value: str) -> str:
    """`value` as a spreadsheet shows it and never runs it: one that a spreadsheet would take for a formula (it
    starts with = + - @, perhaps after spaces, or with a tab or a line break) gets a leading apostrophe, as
    OWASP's CSV injection guidance says. Applied to every text cell of both formats, since observers, notes and
    names written as given come from the public; the apostrophe stays visible in the value, which is honest."""
    if value.startswith(CONTROL_STARTS) or value.lstrip(" ").startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _cells(record_: dict[str, str]) -> dict[str, str]:
    return {term: value if term in NUMERIC_TERMS else spreadsheet_safe(value) for term, value in record_.items()}


def _csv(records: Iterable[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(TERMS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(_cells(r) for r in records)
    return buffer.getvalue()


def _tab_separated(records: Iterable[dict[str, str]]) -> str:
    """GBIF's usual core layout: tabs, no enclosing quotes (tabs and line breaks inside values become spaces)."""
    def clean(value: str) -> str:
        return " ".join(value.replace("\t", " ").splitlines())

    rows = (_cells({term: clean(r[term]) for term in TERMS}) for r in records)
    lines = ["\t".join(TERMS)] + ["\t".join(row[term] for term in TERMS) for row in rows]
    return "\n".join(lines) + "\n"


def _meta_xml() -> bytes:
    archive = ET.Element("archive", {"xmlns": "http://rs.tdwg.org/dwc/text/", "metadata": "eml.xml"})
    core = ET.SubElement(archive, "core", {"encoding": "UTF-8", "fieldsTerminatedBy": "\\t", "linesTerminatedBy": "\\n",
                                           "fieldsEnclosedBy": "", "ignoreHeaderLines": "1", "rowType": OCCURRENCE})
    ET.SubElement(ET.SubElement(core, "files"), "location").text = "occurrence.txt"
    ET.SubElement(core, "id", {"index": "0"})
    for index, term in enumerate(TERMS):
        ET.SubElement(core, "field", {"index": str(index), "term": DWC + term})
    return ET.tostring(archive, encoding="UTF-8", xml_declaration=True)


def _eml_xml(title: str, count: int, package: uuid.UUID) -> bytes:
    eml = ET.Element("eml:eml", {"xmlns:eml": "eml://ecoinformatics.org/eml-2.1.1", "packageId": str(package),
                                 "system": "identify", "xml:lang": "en"})
    dataset = ET.SubElement(eml, "dataset")
    ET.SubElement(dataset, "title").text = title
    creator = ET.SubElement(dataset, "creator")
    ET.SubElement(creator, "organizationName").text = "identify"
    ET.SubElement(dataset, "pubDate").text = datetime.now(timezone.utc).date().isoformat()
    ET.SubElement(ET.SubElement(dataset, "abstract"), "para").text = (
        f"{count} bird sightings identified by vector search over birder embeddings fused with the classifier; "
        "HumanObservation records were confirmed or corrected by a curator.")
    return ET.tostring(eml, encoding="UTF-8", xml_declaration=True)


def write_export(rows: Iterable[ExportRow], out: Path, fmt: str, namespace: uuid.UUID, media_base: str = "",
                 title: str = "Bird sightings") -> int:
    """Write the archive (or CSV) to `out`, beside and then renamed into place; returns the record count."""
    if fmt not in FORMATS:
        raise IdentifyError("bad_format", f"format must be one of {', '.join(FORMATS)}")
    records = [record(row, namespace, media_base) for row in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        if fmt == "csv":
            tmp.write_text(_csv(records), encoding="utf-8")
        else:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr("occurrence.txt", _tab_separated(records))
                archive.writestr("meta.xml", _meta_xml())
                archive.writestr("eml.xml", _eml_xml(title, len(records), namespace))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return len(records)
