"""Identification: one forward pass (probabilities + embedding), a FAISS search, fusion and the decision.

The CLI's `predict` and the web app both call `Identifier.identify`, so they give the same answer."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from identify.backbone import Backbone
from identify.config import FusionConfig
from identify.fusion import Decision, Neighbour, SpeciesScore, decide, fuse
from identify.live_index import LiveIndex
from identify.storage import ReferenceInfo, Store
from identify.vectors import VectorIndex, check_compatible

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
    species: list[SpeciesScore]  # top-5, best first
    decision: Decision
    neighbours: list[NeighbourInfo]  # the k nearest references, nearest first
    embedding: np.ndarray  # raw, as the network gave it: stored with a sighting
    model_name: str
    model_sha256: str
    forward_seconds: float = 0.0  # the model's forward pass of the batch this photo was in (Server-Timing)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision.decision,
            "reasons": list(self.decision.reasons),
            "uncertainty": round(self.decision.uncertainty, 6),
            "species": [
                {"name": s.name, "score": round(s.score, 6), "classifier": round(s.classifier, 6), "knn": round(s.knn, 6)}
                for s in self.species
            ],
            "neighbours": [
                {"reference_id": n.reference_id, "species": n.species, "similarity": round(n.similarity, 6),
                 "path": n.path}
                for n in self.neighbours
            ],
            "model": {"name": self.model_name, "sha256": self.model_sha256},
        }


class Identifier:
    def __init__(self, backbone: Backbone, index: VectorIndex | LiveIndex, store: Store, config: FusionConfig,
                 index_name: str = "in use") -> None:
        check_compatible(index.manifest, backbone.identity, index_name)  # one model, one vector space
        self.backbone = backbone
        self.index = index
        self.store = store
        self.config = config
        self._known: dict[int, ReferenceInfo] = {}  # references never change species or file: safe to keep

    def _references(self, ids: set[int]) -> dict[int, ReferenceInfo]:
        """Species, path and hash of these references, from SQL once per reference."""
        missing = ids - self._known.keys()
        if missing:
            if len(self._known) > REFERENCE_CACHE_SIZE:
                self._known = {}
            self._known.update(self.store.references(missing))
        return {i: self._known[i] for i in ids if i in self._known}

    def identify(self, images: Sequence[Image.Image]) -> list[Identification]:
        """One identification per image, from one batched forward pass and one batched search."""
        return [self.explain(evidence) for evidence in self.search(images)]

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

    def explain(self, evidence: Evidence) -> Identification:
        """Fusion and decision for one photo's evidence."""
        return self._explain(evidence.probabilities, evidence.neighbours, evidence.embedding, evidence.forward_seconds)

    def _explain(self, probabilities: np.ndarray, neighbours: list[NeighbourInfo], embedding: np.ndarray,
                 forward_seconds: float) -> Identification:
        votes = [Neighbour(n.reference_id, n.species, n.similarity) for n in neighbours]
        ranking = fuse(self.backbone.identity.classes, probabilities, votes, self.config)
        return Identification(
            species=ranking[:TOP_SPECIES],
            decision=decide(ranking, votes, self.config),
            neighbours=neighbours,
            embedding=embedding,
            model_name=self.backbone.identity.name,
            model_sha256=self.backbone.identity.sha256,
            forward_seconds=forward_seconds,
        )
