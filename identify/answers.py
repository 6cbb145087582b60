"""The one JSON shape of an answer: ranked species with their taxa, the decision, the neighbours that voted and
the model. The API, the pages and `identify predict --json` all serialise through here; only how a neighbour's
photo is pointed at differs (a thumbnail URL on the web, a file path on the command line)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from identify.fusion import RankedSpecies
from identify.identifier import Identification, NeighbourInfo
from identify.taxonomy import Taxon, group_name

NeighbourLink = Callable[[NeighbourInfo], dict[str, Any]]  # where a neighbour's photo is: {"path": ...} or a URL


def name_parts(label: str | None, taxon: Taxon | None) -> tuple[str | None, str | None, str | None]:
    """(lead, rank, scientific name) of the one naming rule: a species by its common name with its scientific
    name; a higher taxon as what its birds are called with its rank ("a hummingbird", "family", "Trochilidae");
    a model label as written (underscores as spaces) only when no taxonomy knows it."""
    if taxon is None:
        return (label or "no species").replace("_", " "), None, None
    if taxon.rank in ("species", "subspecies"):
        return taxon.common_name, None, taxon.scientific_name
    called = group_name(taxon.rank, taxon.scientific_name)
    article = "an" if called and called[0] in "aeiou" else "a"
    return (f"{article} {called}" if called else None), taxon.rank, taxon.scientific_name


# What the decisions, statuses and reasons say to a person: the pages and `predict`'s text (the codes stay in JSON).
DECISION_WORDS = {"confident": "Confident", "needs_review": "Not sure yet", "no_match": "No match"}
STATUS_WORDS = {"confirmed": "Confirmed by a curator", "corrected": "Corrected by a curator",
               "rejected": "Rejected by a curator", "open": "Open", "awaiting_second_opinion": "Waiting for a second curator"}
REASON_WORDS = {
    "low_score": "The best score is low.",
    "small_margin": "The two most likely species are close.",
    "disagreement": "The model and the most similar reference photos disagree.",
    "far_from_references": "No reference photo is much like it.",
    "classifier_unsure": "The model is unsure.",
    "unusual_for_place_date": "The most likely species is unusual for this place and time of year: a rarity "
                              "for a curator to check.",
    "thin_support": "Too few different reference photos back the answer.",
    "named_species_unreferenced": "The model names a species with too few reference photos to compare with.",
    "classifier_names_another": "The model strongly names another species.",
    "classifier_does_not_vouch": "The model knows this species but does not see it in the photo; only similar "
                                 "reference photos point to it, as they would for a look-alike without any.",
    "outside_species_spread": "The photo is less like this species' reference photos than its own birds are.",
    "risk_over_target": "Curators' checks show that answers like this one have been wrong more often than promised, "
                        "so none is called confident for now.",
    "new_here": "This species is new here: only reference photos curators added know it, and answers naming it "
                "are not called confident until enough of them have been checked. A curator will check this one.",
    "place_changes_answer": "Where and when it was seen changes the answer from what the photo alone shows, and "
                            "answers with a place have not yet been checked here, so a curator will look.",
    "recertifying": "New or changed reference photos of this species are being checked; until then its answers "
                    "are not called confident.",
    "calibration_stale": "The reference photos changed since the scores were last checked, so nothing is called "
                         "confident until a curator checks them again.",
}


def reason_words(codes: Sequence[str]) -> list[str]:
    return [REASON_WORDS.get(code, "Another check held the answer back.") for code in codes]


def display_name(label: str | None, taxon: Taxon | None) -> str:
    """How the pages, the API's `answer` and `predict` name a taxon: "Red Junglefowl (Gallus gallus)",
    "a hummingbird (family Trochilidae)", "family Gruidae", or the raw label when no taxonomy knows it."""
    lead, rank, scientific = name_parts(label, taxon)
    formal = f"{rank} {scientific}" if rank else scientific
    if lead and formal:
        return f"{lead} ({formal})"
    return lead or formal or ""


def taxon_json(taxon: Taxon | None) -> dict[str, Any] | None:
    """A taxon as every JSON answer gives it, the API's and the command line's alike (identify.web.schemas.Taxon)."""
    if taxon is None:
        return None
    lead, _, _ = name_parts(None, taxon)
    return {"scientific_name": taxon.scientific_name, "common_name": taxon.common_name, "rank": taxon.rank,
            "genus": taxon.genus, "family": taxon.family, "order": taxon.order,
            "authority": taxon.authority, "authority_version": taxon.version,
            "display_name": display_name(None, taxon), "called": lead if taxon.rank not in ("species",
                                                                                           "subspecies") else None}


def ranked_json(species: RankedSpecies) -> dict[str, Any]:
    """`score` is what a person reads (calibrated when a calibration is set); `fused` is the score before it."""
    fused = species.fused if species.fused is not None else species.score
    out = {"name": species.name, "display_name": display_name(species.name, species.taxon),
           "score": round(species.score, 6), "classifier": round(species.classifier, 6),
           "knn": round(species.knn, 6), "fused": round(fused, 6), "taxon": taxon_json(species.taxon)}
    if species.expected_here is not None:  # a place and date shaped the answer
        out.update(prior=round(species.prior or 0.0, 6), expected_here=species.expected_here)
    return out


def ranking_json(ranking: Sequence[RankedSpecies]) -> list[dict[str, Any]]:
    return [ranked_json(s) for s in ranking]


def neighbours_json(neighbours: Sequence[NeighbourInfo], link: NeighbourLink) -> list[dict[str, Any]]:
    """`species` is the reference's label as its build wrote it (a folder's name), `name` the species it votes for
    (the ranking's `name`: one species whatever label a photo came with)."""
    return [{"reference_id": n.public_id, "species": n.label or n.species, "name": n.species,
             "similarity": round(n.similarity, 6), **link(n)} for n in neighbours]


def identification_json(result: Identification, link: NeighbourLink) -> dict[str, Any]:
    return {
        "decision": str(result.decision.decision),
        "reasons": list(result.decision.reasons),
        "uncertainty": round(result.decision.uncertainty, 6),
        "species": ranking_json(result.species),
        "rank": result.rank,
        "rollup": result.rollup.to_dict() if result.rollup is not None else None,
        "neighbours": neighbours_json(result.neighbours, link),
        "model": {"name": result.model_name, "sha256": result.model_sha256},
        "place": ({"lat": result.place.lat, "lon": result.place.lon, "date": result.place.when.isoformat()}
                  if result.place is not None else None),
        "same_photo_as": same_photo_id(result),
        "risk_bounded": result.risk_bounded,
        "calibration": result.calibration.to_dict(),
    }


def same_photo_id(result: Identification) -> str | None:
    """The public id of the reference that is this very photo, if any (it is among the neighbours)."""
    return next((n.public_id for n in result.neighbours if n.reference_id == result.same_photo_as), None)


def path_link(neighbour: NeighbourInfo) -> dict[str, Any]:
    """The command line points at a reference photo by its file."""
    return {"path": neighbour.path}
