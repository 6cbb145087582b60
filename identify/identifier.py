"""Identification: one forward pass (probabilities + embedding), a search of the live reference set, fusion and
the decision.

The CLI's `predict` and the web app both call `Identifier.search` and `Identifier.explain`, so they give the
same answer. Labels that name the
same taxon (a model class "House sparrow", a reference folder "Passer_domesticus") are one species here: the
model's class label stands for the taxon, and each ranked species carries its taxon."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

from identify.calibration import Calibration
from identify.config import FusionConfig
from identify.fusion import CONFIDENT, Decision, Neighbour, RankedSpecies, calibrated, decide, fuse, with_prior
from identify.prior import FLOOR, Place, PriorModel
from identify.references import ReferenceInfo, References
from identify.rollup import RollUp, roll_up
from identify.taxonomy import Taxon

if TYPE_CHECKING:
    from identify.backbone import Backbone

TOP_SPECIES = 5
REFERENCE_CACHE_SIZE = 200_000


@dataclass(frozen=True)
class NeighbourInfo:
    reference_id: int
    species: str
    similarity: float
    path: str
    file_sha256: str  # names its thumbnail


@dataclass(frozen=True)
class Evidence:
    """What one forward pass and one search found for a photo, before fusion."""

    probabilities: np.ndarray
    embedding: np.ndarray
    neighbours: list[NeighbourInfo]  # nearest first
    forward_seconds: float  # the forward pass of the batch this photo was in


@dataclass(frozen=True)
class Identification:
    species: list[RankedSpecies]  # top-5, best first
    decision: Decision
    neighbours: list[NeighbourInfo]  # the k nearest references, nearest first
    embedding: np.ndarray  # raw, as the network gave it: stored with a sighting
    model_name: str
    model_sha256: str
    forward_seconds: float = 0.0  # the model's forward pass of the batch this photo was in (Server-Timing)
    rollup: RollUp | None = None  # when no species is confident: the lowest taxon sure enough
    place: Place | None = None  # the place and date whose prior shaped the answer (None: the photo's alone)


def pool_evidence(photos: Sequence[Evidence]) -> Evidence:
    """Several photos of one bird as one piece of evidence: the classifier's probabilities by their geometric
    mean (each photo's log-probabilities averaged, renormalised: a class must fit every photo), the neighbours
    of all photos pooled (each reference once, at its highest similarity), and the mean of the photos' unit
    embeddings for similar sightings. One photo is returned as it is."""
    if len(photos) == 1:
        return photos[0]
    logs = np.mean([np.log(np.clip(e.probabilities, 1e-12, 1.0)) for e in photos], axis=0)
    probabilities = np.exp(logs - logs.max())
    best: dict[int, NeighbourInfo] = {}
    for evidence in photos:
        for n in evidence.neighbours:
            if n.reference_id not in best or n.similarity > best[n.reference_id].similarity:
                best[n.reference_id] = n
    units = [e.embedding / max(float(np.linalg.norm(e.embedding)), 1e-12) for e in photos]
    return Evidence((probabilities / probabilities.sum()).astype(np.float32), np.mean(units, axis=0).astype(np.float32),
                    sorted(best.values(), key=lambda n: -n.similarity), max(e.forward_seconds for e in photos))


class SpeciesNames:
    """Label -> taxon, and the one label that stands for each taxon in answers (the model's class first)."""

    def __init__(self, classes: Sequence[str], taxa: dict[str, Taxon | None]) -> None:
        self.taxa = taxa
        self._standing: dict[str, str] = {}  # scientific name -> label
        for label in [*classes, *taxa]:
            taxon = taxa.get(label)
            if taxon is not None:
                self._standing.setdefault(taxon.scientific_name, label)
        self.classes = [self.canonical(label) for label in classes]

    def knows(self, label: str) -> bool:
        return label in self.taxa

    def canonical(self, label: str) -> str:
        taxon = self.taxa.get(label)
        return self._standing.get(taxon.scientific_name, label) if taxon is not None else label


class Identifier:
    def __init__(self, backbone: "Backbone", index: Any, references: References, config: FusionConfig,
                 calibration: Calibration | None = None) -> None:
        self.backbone = backbone
        self.index = index  # a LiveIndex, checked against the model when it was opened
        self.references = references
        self.config = config
        self.calibration = calibration or Calibration()
        self.prior: PriorModel | None = None  # place and season; set when occurrences are known
        self._known: dict[int, ReferenceInfo] = {}  # references never change species or file: safe to keep
        self.names = self._load_names()

    def _load_names(self) -> SpeciesNames:
        return SpeciesNames(self.backbone.identity.classes, self.references.label_taxa())

    def _references(self, ids: set[int]) -> dict[int, ReferenceInfo]:
        """Species, path and hash of these references, from SQL once per reference."""
        missing = ids - self._known.keys()
        if missing:
            if len(self._known) > REFERENCE_CACHE_SIZE:
                self._known = {}
            fetched = self.references.info(missing)
            self._known.update(fetched)
            if any(not self.names.knows(info.species) for info in fetched.values()):
                self.names = self._load_names()  # a label new since we looked (a curator named a new species)
        return {i: self._known[i] for i in ids if i in self._known}

    def search(self, images: Sequence[Image.Image]) -> list[Evidence]:
        """The transform, forward pass and neighbour search of a batch of photos: the part that gains from
        batching. The service runs it in its batcher, and explains each result in the request's thread."""
        batch = self.backbone.batch(images)
        started = time.perf_counter()
        output = self.backbone.forward(batch)
        forward_seconds = time.perf_counter() - started
        similarities, ids = self.index.search(output.embeddings, self.config.k)
        known = self._references({int(i) for i in ids.ravel() if i >= 0})
        return [
            Evidence(
                probabilities,
                output.embeddings[row],
                [NeighbourInfo(int(ref_id), known[int(ref_id)].species, float(sim), known[int(ref_id)].path,
                               known[int(ref_id)].file_sha256)
                 for sim, ref_id in zip(similarities[row], ids[row], strict=True)
                 if ref_id >= 0 and int(ref_id) in known],
                forward_seconds,
            )
            for row, probabilities in enumerate(output.probabilities)
        ]

    def explain(self, evidence: Evidence, place: Place | None = None) -> Identification:
        """Fusion, calibration, the prior of the place and week (when given and any occurrences are known),
        decision and (when not confident) roll-up for one photo's evidence."""
        names = self.names
        votes = [Neighbour(n.reference_id, names.canonical(n.species), n.similarity) for n in evidence.neighbours]
        fused = fuse(names.classes, evidence.probabilities, votes, self.config)
        ranking = [s.with_taxon(names.taxa.get(s.name)) for s in calibrated(fused, self.calibration, votes)]
        prior = self.prior
        if place is not None and prior is not None and not prior.empty:
            ranking = with_prior(ranking, prior.at(place, (s.taxon.scientific_name for s in ranking if s.taxon)), FLOOR)
        else:
            place = None
        decision = decide(ranking, votes, self.config)
        rollup = None
        if decision.decision != CONFIDENT:
            rollup = roll_up(ranking, self.config.confident_score, self.references.taxonomy.group_name)
        return Identification(
            species=ranking[:TOP_SPECIES],
            rollup=rollup,
            place=place,
            decision=decision,
            neighbours=evidence.neighbours,
            embedding=evidence.embedding,
            model_name=self.backbone.identity.name,
            model_sha256=self.backbone.identity.sha256,
            forward_seconds=evidence.forward_seconds,
        )
