"""JSON shapes of the API, built from the core's records through identify.answers (the pages render the same
dictionaries, so a species reads the same everywhere)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any, Callable

from flask import g, url_for

from identify.answers import identification_json as answer_json
from identify.answers import neighbours_json as answer_neighbours_json
from identify.answers import display_name, ranking_json, taxon_json
from identify.framing import Crop, Framing
from identify.places import place_name
from identify.rollup import answered_taxon, rank_taxon
from identify.identifier import NeighbourInfo
from identify.reference_records import ReferenceRecord
from identify.service import SimilarSighting
from identify.uploads import Identified
from identify.sighting_search import SightingFilters
from identify.sightings import ReviewRecord, SightingRecord
from identify.metadata import generalised
from identify.taxonomy import Suggestion, Taxon
from identify.web.auth import current_curator_or_none


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def thumbnail_url(sha256: str, crop: Crop | None = None) -> str:
    """A photo's thumbnail, or its stored crop's (pages.thumbnail makes only those)."""
    # One url_for per request, then string work: a response lists up to k neighbours.
    if "thumbnail_prefix" not in g:
        g.thumbnail_prefix = url_for("pages.thumbnail", name="x.jpg")[: -len("x.jpg")]
    return f"{g.thumbnail_prefix}{sha256}.jpg" + (f"?crop={crop.text}" if crop else "")


def sees_exact_places() -> bool:
    """Curators see exact positions and original photos; the public sees generalised ones without GPS."""
    return current_curator_or_none() is not None


def filters_for_viewer(filters: SightingFilters) -> SightingFilters:
    """The public's area filter matches the generalised positions it is shown, never the exact ones."""
    return filters if sees_exact_places() else replace(filters, exact_places=False)


def photo_url(name: str) -> str:
    return url_for("pages.original" if sees_exact_places() else "pages.photo", name=name)


def location_json(record: SightingRecord) -> dict[str, Any]:
    """lat, lon and their uncertainty as this viewer may see them (see sees_exact_places)."""
    if record.lat is None or record.lon is None:
        return {"lat": None, "lon": None, "coordinate_uncertainty_m": None, "location": "none", "place": None}
    stated = record.coordinate_uncertainty_m
    if sees_exact_places():
        return {"lat": record.lat, "lon": record.lon, "coordinate_uncertainty_m": stated,
                "location": "hidden from the public" if record.hide_location else "exact",
                "place": place_name(record.lat, record.lon, exact=True)}
    if record.hide_location:
        return {"lat": None, "lon": None, "coordinate_uncertainty_m": None, "location": "hidden", "place": None}
    lat, lon, radius = generalised(record.lat, record.lon)
    return {"lat": lat, "lon": lon, "coordinate_uncertainty_m": max(radius, stated or 0.0), "location": "generalised",
            "place": place_name(lat, lon, exact=False)}


def answered_as(record: SightingRecord) -> tuple[str | None, Taxon | None]:
    """(label, taxon) a sighting is answered as now: an open one confident only at a higher rank by that taxon
    ("genus Sylvia"), else by its species (the model's top, or the curator's)."""
    ranked = answered_taxon(record.status, record.decision, record.rollup)
    return (ranked.scientific_name, ranked) if ranked is not None else (record.species, record.taxon)


Answered = tuple[str | None, Taxon | None]  # answered_as's (label, taxon)


def answered_rank(record: SightingRecord, answered: Answered | None = None) -> str | None:
    """The rank an open sighting is confident at (species, or the rank that holds), the rank of a curator's
    taxon once reviewed; None when open and not confident, or rejected. `answered`: answered_as's, if known."""
    if record.status == "rejected" or (record.status == "open" and record.decision != "confident"):
        return None
    label, taxon = answered or answered_as(record)
    return taxon.rank if taxon is not None and taxon.rank != "subspecies" else ("species" if label else None)


def answer_name(record: SightingRecord, answered: Answered | None = None) -> str | None:
    """What a sighting is called now, as its page's heading names it (None: rejected, or no match yet).
    `answered`: answered_as's, if known."""
    if record.species is None or (record.status == "open" and record.decision == "no_match"):
        return None
    return display_name(*(answered or answered_as(record)))


def framed_photo_json(name: str, sha256: str, framing: Framing | None) -> dict[str, Any]:
    """One photo of a sighting (schemas.FramedPhoto): its links, and how the model looked at it (the crop used,
    None: the whole photo; whose it was; what a detector found)."""
    framing = framing or Framing()
    return {"photo_url": photo_url(name), "thumbnail_url": thumbnail_url(sha256, framing.crop), **framing.to_dict()}


def thumbnail_link(neighbour: NeighbourInfo) -> dict[str, Any]:
    """The web points at a reference photo by its thumbnail (never by a file path)."""
    return {"thumbnail_url": thumbnail_url(neighbour.file_sha256, neighbour.crop)}


def neighbours_json(neighbours: list[NeighbourInfo]) -> list[dict[str, Any]]:
    return answer_neighbours_json(neighbours, thumbnail_link)


def identification_json(identified: Identified) -> dict[str, Any]:
    result, sighting_id = identified.result, identified.public_id
    top = result.species[0] if result.species else None
    named = top is not None and result.decision.decision != "no_match"
    ranked = rank_taxon(result.rollup.to_dict()) if result.rollup is not None else None
    label, taxon = (ranked.scientific_name, ranked) if ranked is not None else \
        ((top.name, top.taxon) if named and top else (None, None))
    return {"sighting_id": sighting_id, "url": url_for("pages.sighting", sighting_id=sighting_id),
            "answer": display_name(label, taxon) if label else None,
            "answer_label": label,
            **answer_json(result, thumbnail_link),
            "photos": [framed_photo_json(p.name, p.sha256, f)
                       for p, f in zip(identified.photos, identified.framing, strict=True)]}


def review_json(review: ReviewRecord) -> dict[str, Any]:
    """A review as this viewer may see it: who reviewed and their note are the curators' (the public sees what
    was done, not by whom or why)."""
    curators = sees_exact_places()
    return {"curator": review.curator if curators else None, "action": review.action, "species": review.species,
            "note": review.note if curators else None, "version": review.version, "added_as_reference": review.added_as_reference,
            "created_at": _iso(review.created_at), "single_curator": review.single_curator}


def cover_crop(record: SightingRecord) -> Crop | None:
    """The crop of a sighting's first photo (the one lists show), if it had one."""
    first = record.photos[0].framing if record.photos else None
    return first.crop if first is not None else None


def sighting_summary_json(record: SightingRecord, blind: bool = False) -> dict[str, Any]:
    """What lists (queue, similar sightings) show of a sighting; `blind` (an audit in the queue): not the model's
    answer, so the curator names the bird unswayed."""
    answered = answered_as(record)
    summary = {
        "sighting_id": record.public_id,
        "url": url_for("pages.sighting", sighting_id=record.public_id),
        "photo_url": photo_url(record.photo_name),
        "thumbnail_url": thumbnail_url(record.photo_sha256, cover_crop(record)),
        "whole_thumbnail_url": thumbnail_url(record.photo_sha256, None),
        "decision": record.decision,
        "uncertainty": round(record.uncertainty, 6),
        "status": record.status,
        "answer": answer_name(record, answered),
        "answer_label": answered[0],
        "answer_taxon": taxon_json(answered[1]),
        "rank": answered_rank(record, answered),
        "version": record.version,
        "top": ranking_json(record.predictions[:1]),
        **location_json(record),
        "observed_at": record.observed_local,
        "observer": record.observer,
        "cover_crop": crop.to_dict() if (crop := cover_crop(record)) is not None else None,
        "observed_zone": record.observed.zone if record.observed else None,
        "created_at": _iso(record.created_at),
        "audit": record.audit,
    }
    if blind:
        summary |= {"answer": None, "answer_label": None, "answer_taxon": None, "rank": None, "top": []}
    return summary


def sighting_json(record: SightingRecord, neighbours: list[NeighbourInfo] | None = None) -> dict[str, Any]:
    out = sighting_summary_json(record)
    out.update({
        "photos": [framed_photo_json(p.name, p.sha256, p.framing) for p in record.photos],
        "reasons": record.reasons,
        "observer": record.observer,
        "note": record.note,
        "species": ranking_json(record.predictions),
        "rollup": record.rollup,
        "model": {"name": record.model_name, "sha256": record.model_sha256},
        "reviews": [review_json(r) for r in record.reviews],
    })
    out.pop("top")
    if neighbours is not None:
        out["neighbours"] = neighbours_json(neighbours)
    return out


def similar_json(hits: list[SimilarSighting]) -> list[dict[str, Any]]:
    return [{**sighting_summary_json(hit.sighting), "similarity": round(hit.similarity, 6)} for hit in hits]


def agreeing_neighbours(neighbours: list[NeighbourInfo], label: str, canonical: Callable[[str], str]) -> int:
    """How many of the neighbours name the species `label` names, labels of one taxon (`hen`, `Gallus gallus`)
    agreeing: `canonical` is the identifier's label for a taxon (SpeciesNames.canonical)."""
    wanted = canonical(label)
    return sum(canonical(n.species) == wanted for n in neighbours)


def suggestion_json(suggestion: Suggestion) -> dict[str, Any]:
    return {"name": suggestion.name, "taxon": taxon_json(suggestion.taxon)}


def reference_json(record: ReferenceRecord, nearest: list[NeighbourInfo] | None = None) -> dict[str, Any]:
    """A reference as curators see it (the API's reference endpoints are curators' only: exact places)."""
    out = {**record.to_dict(with_changes=nearest is not None), "thumbnail_url": thumbnail_url(record.file_sha256, record.crop)}
    if nearest is not None:
        out["nearest"] = answer_neighbours_json(nearest, thumbnail_link)
    return out
