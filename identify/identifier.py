"""Identification: one forward pass (probabilities + embedding), a search of the live reference set, and the
answer of identify.scoring (fusion, calibration, prior, decision, roll-up) over that evidence.

The CLI's `predict` and the web app both call `Identifier.search` and `Identifier.explain`, and `evaluate` calls
identify.scoring.answer itself, so all three give the same answer to the same evidence."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from PIL import Image

from identify.calibration import Calibration, CalibrationState, FittedOn
from identify.config import FusionConfig
from identify.framing import Crop
from identify.fusion import Decision, Neighbour, RankedSpecies
from identify.observation import Place
from identify.prior import PriorModel
from identify.references import ReferenceInfo, References
from identify.rollup import RANK_GROUP, RollUp
from identify.scoring import SpeciesNames, answer, answered_rank

__all__ = ["Evidence", "Identification", "Identifier", "NeighbourInfo", "SpeciesNames", "pool_evidence"]

if TYPE_CHECKING:
    from identify.backbone import Backbone
    from identify.certifications import Following, Served

TOP_SPECIES = 5
REFERENCE_CACHE_SIZE = 200_000


@dataclass(frozen=True)
class NeighbourInfo:
    reference_id: int
    species: str
    similarity: float
    path: str
    file_sha256: str  # names its thumbnail
    public_id: str = ""  # what answers, pages and the API call the reference
    crop: Crop | None = None  # the part of the photo the reference stands for (its thumbnail shows it)
    label: str = ""  # the reference's label as the build wrote it; `species` is the species it votes for

    @classmethod
    def of(cls, reference: ReferenceInfo, similarity: float) -> "NeighbourInfo":
        return cls(reference.id, reference.species, similarity, reference.path, reference.file_sha256,
                   reference.public_id, reference.crop, reference.label)


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
    rollup: RollUp | None = None  # when the species is not confident: the rank that holds, else a suggestion
    place: Place | None = None  # the place and date whose prior shaped the answer (None: the photo's alone)
    same_photo_as: int | None = None  # a reference that is this very photo (identify.openset)
    risk_bounded: bool = False  # its threshold bounds the error of answers like it (identify.scoring.Answer)
    calibration: CalibrationState = CalibrationState("uncalibrated")  # as of this answer
    groups: tuple[str, ...] = ()  # its risk groups, most specific first (identify.scoring.answer_groups)

    @property
    def rank(self) -> str | None:
        """The rank it is confident at (species, genus, family, order); None when not confident."""
        return answered_rank(str(self.decision.decision), self.rollup)

    @property
    def risk_group(self) -> str | None:
        """The coarse group (known, new, contested; +place) whose audits it counts in; for an answer confident
        at a higher rank, that rank's (`rank:genus`): it is not audited as a species answer, and waits in the
        review queue for a curator to name the species."""
        if self.rank not in (None, "species") and self.rollup is not None:
            return RANK_GROUP + self.rollup.rank
        return self.groups[-2] if len(self.groups) >= 2 else None


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


class Identifier:
    def __init__(self, backbone: "Backbone", index: Any, references: References, config: FusionConfig,
                 calibration: Calibration | None = None,
                 count_references: Callable[[], dict[str, int]] | None = None,
                 following: "Following | None" = None) -> None:
        """`count_references`: references per species of the searched set, read again whenever the index's
        size changes (None: unknown, and the open-set rule of identify.openset is off); `following`: the index's
        certifications (identify.certifications), whose thresholds, once there is one, are served instead of
        `config`'s and `calibration`'s."""
        self.backbone = backbone
        self.index = index  # a LiveIndex, checked against the model when it was opened
        self.references = references
        self.config = config
        self.calibration = calibration or Calibration()
        self.prior: PriorModel | None = None  # place and season; set when occurrences are known
        # Label, file and public id per reference: kept until the reference set's change stamp moves (a curator
        # relabelled or retired one; the live index reads the stamp as it refreshes).
        self._known: dict[int, ReferenceInfo] = {}
        self._stamp = 0
        self.count_references = count_references
        self.following = following
        # (index size, change stamp, counts, state)
        self._counts: tuple[int, int, dict[str, int], CalibrationState] | None = None
        self.names = self._load_names()

    def _load_names(self) -> SpeciesNames:
        return SpeciesNames(self.backbone.identity.classes, self.references.label_taxa())

    def _references(self, ids: set[int]) -> dict[int, ReferenceInfo]:
        """Species, path, hash and public id of these references, from SQL once per reference (and again after
        the reference set changed)."""
        stamp = getattr(self.index, "stamp", 0)
        if stamp != self._stamp:
            self._known, self._stamp = {}, stamp
            self.names = self._load_names()  # a relabel may name a species new to this process
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
                [NeighbourInfo.of(known[int(ref_id)], float(sim))
                 for sim, ref_id in zip(similarities[row], ids[row], strict=True)
                 if ref_id >= 0 and int(ref_id) in known],
                forward_seconds,
            )
            for row, probabilities in enumerate(output.probabilities)
        ]

    def reference_counts(self) -> dict[str, int] | None:
        """References per species label now (re-read when the index has grown or shrunk since)."""
        if self.count_references is None:
            return None
        return self._counted()[2]

    def reference_counts_now(self) -> dict[str, int]:
        """References per species label as SQL has them this moment (a curator's review asks, not an answer)."""
        return self.count_references() if self.count_references is not None else {}

    def calibration_state(self, served: "Served | None" = None) -> CalibrationState:
        """What the thresholds served are worth for the references searched now: certified (`current`), being
        certified again after a change (`recertifying`), or the stored calibration's own state. `served`: as
        already read for this answer (else read now)."""
        served = served or self.served()
        if served is not None and served.state is not None:
            return served.state
        if self.count_references is None:
            return self.calibration.state(None)
        return self._counted()[3]

    def served(self) -> "Served | None":
        """The index's certifications as of now (None: not followed)."""
        if self.following is None:
            return None
        return self.following.served((self.index.count, getattr(self.index, "stamp", 0)))

    def _counted(self) -> tuple[int, int, dict[str, int], CalibrationState]:
        """Counts and the calibration's state, worked out again only when the index's size or the reference
        set's change stamp moves (not on every answer: the state takes a median over every species)."""
        size, stamp = self.index.count, getattr(self.index, "stamp", 0)
        if self._counts is None or self._counts[:2] != (size, stamp):
            counts = self.count_references()  # type: ignore[misc]
            served = FittedOn.of_counts(counts, self.prior is not None and not self.prior.empty)
            self._counts = (size, stamp, counts, self.calibration.state(served))
        return self._counts

    def explain(self, evidence: Evidence, place: Place | None, over_target: frozenset[str]) -> Identification:
        """The answer to one photo's (or one sighting's pooled) evidence: identify.scoring.answer, the decision
        function `evaluate` measures, with this service's names, settings, calibration and prior.
        `over_target`: the risk groups the live audit has stopped (identify.audit), read by the caller from SQL
        for this answer (nothing held here between answers)."""
        names = self.names
        votes = [Neighbour(n.reference_id, n.species, n.similarity) for n in evidence.neighbours]
        served = self.served()
        config, calibration = (served.config, served.calibration) if served and served.state else \
            (self.config, self.calibration)
        held_back = frozenset(names.canonical(label) for label in served.held_back) if served else frozenset()
        state, counts = self.calibration_state(served), self.reference_counts()
        decided = answer(evidence.probabilities, votes, names, config, calibration, self.prior, place,
                         self.references.taxonomy.group_name, counts, state.stale,
                         over_target, held_back=held_back)
        return Identification(
            species=decided.ranking[:TOP_SPECIES],
            rollup=decided.rollup,
            place=decided.place,
            decision=decided.decision,
            neighbours=evidence.neighbours,
            embedding=evidence.embedding,
            model_name=self.backbone.identity.name,
            model_sha256=self.backbone.identity.sha256,
            forward_seconds=evidence.forward_seconds,
            same_photo_as=decided.support.same_photo_as,
            risk_bounded=decided.risk_bounded,
            calibration=state,
            groups=decided.groups,
        )
