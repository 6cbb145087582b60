"""Identification: one forward pass (probabilities + embedding), a FAISS search, fusion and the decision.

The CLI's `predict` and the web app both call `Identifier.identify`, so they give the same answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from identify.backbone import Backbone
from identify.config import FusionConfig
from identify.fusion import Decision, Neighbour, SpeciesScore, decide, fuse
from identify.live_index import LiveIndex
from identify.storage import Store
from identify.vectors import VectorIndex, check_compatible

TOP_SPECIES = 5


@dataclass(frozen=True)
class NeighbourInfo:
    reference_id: int
    species: str
    similarity: float
    path: str
    file_sha256: str  # names its thumbnail


@dataclass(frozen=True)
class Identification:
    species: list[SpeciesScore]  # top-5, best first
    decision: Decision
    neighbours: list[NeighbourInfo]  # the k nearest references, nearest first
    embedding: np.ndarray  # raw, as the network gave it: stored with a sighting
    model_name: str
    model_sha256: str

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

    def identify(self, images: Sequence[Image.Image]) -> list[Identification]:
        """One identification per image, from one batched forward pass and one batched search."""
        output = self.backbone.forward_images(list(images))
        similarities, ids = self.index.search(output.embeddings, self.config.k)
        known = self.store.references({int(i) for i in ids.ravel() if i >= 0})
        results = []
        for row, probabilities in enumerate(output.probabilities):
            neighbours = [
                NeighbourInfo(int(ref_id), known[int(ref_id)].species, float(sim), known[int(ref_id)].path,
                              known[int(ref_id)].file_sha256)
                for sim, ref_id in zip(similarities[row], ids[row], strict=True)
                if ref_id >= 0 and int(ref_id) in known
            ]
            results.append(self._explain(probabilities, neighbours, output.embeddings[row]))
        return results

    def _explain(self, probabilities: np.ndarray, neighbours: list[NeighbourInfo], embedding: np.ndarray) -> Identification:
        votes = [Neighbour(n.reference_id, n.species, n.similarity) for n in neighbours]
        ranking = fuse(self.backbone.identity.classes, probabilities, votes, self.config)
        return Identification(
            species=ranking[:TOP_SPECIES],
            decision=decide(ranking, votes, self.config),
            neighbours=neighbours,
            embedding=embedding,
            model_name=self.backbone.identity.name,
            model_sha256=self.backbone.identity.sha256,
        )
