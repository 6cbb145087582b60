"""Fusion of the neighbours' votes with the classifier, and the decision (Jia et al. 2021, arXiv 2112.08459).

    p(c) = lambda * p_kNN(c) + (1 - lambda) * p_clf(c),   p_kNN(c) ∝ sum over top-k with y_i = c of exp(s_i / T)

with s_i the cosine similarity of L2-normalised embeddings. The label space is the union of the classifier's
classes and the references' species, so a species known only through its references can still win.
Open-set rejection follows Sun et al. 2022 (arXiv 2204.06507): far from every reference means no match."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Sequence

import numpy as np

from identify.config import FusionConfig
from identify.taxonomy import Taxon


class Outcome(StrEnum):
    """What an identification decided. A str: it is stored, compared and serialised as its value."""

    CONFIDENT = "confident"
    NEEDS_REVIEW = "needs_review"
    NO_MATCH = "no_match"


CONFIDENT, NEEDS_REVIEW, NO_MATCH = Outcome.CONFIDENT, Outcome.NEEDS_REVIEW, Outcome.NO_MATCH


@dataclass(frozen=True)
class Neighbour:
    reference_id: int
    species: str
    similarity: float  # cosine, in [-1, 1]


@dataclass(frozen=True)
class RankedSpecies:
    """One species of an answer: its label, the fused score and both parts, and the taxon the label names."""

    name: str
    score: float  # fused
    classifier: float  # p_clf
    knn: float  # p_kNN
    taxon: Taxon | None = None

    def with_taxon(self, taxon: Taxon | None) -> "RankedSpecies":
        return replace(self, taxon=taxon)


@dataclass(frozen=True)
class Decision:
    decision: Outcome
    reasons: tuple[str, ...]  # why it is not confident: low_score, small_margin, disagreement, far_from_references
    uncertainty: float  # 1 - (top-1 minus top-2 fused score): the review queue's order


def knn_distribution(neighbours: Sequence[Neighbour], k: int, temperature: float) -> dict[str, float]:
    """p_kNN over the species of the k nearest neighbours: softmax weights exp(s_i / T), summed per species."""
    top = list(neighbours)[:k]
    if not top:
        return {}
    similarities = np.array([n.similarity for n in top], dtype=np.float64)
    weights = np.exp((similarities - similarities.max()) / temperature)  # shifted: same ratios, no overflow
    weights /= weights.sum()
    votes: dict[str, float] = {}
    for neighbour, weight in zip(top, weights, strict=True):
        votes[neighbour.species] = votes.get(neighbour.species, 0.0) + float(weight)
    return votes


def fuse(
    classes: Sequence[str], probabilities: np.ndarray, neighbours: Sequence[Neighbour], config: FusionConfig
) -> list[RankedSpecies]:
    """Every species with a non-zero fused score, best first. Without neighbours the classifier decides alone.
    Classes that share a name (two labels of one taxon, named alike by the caller) pool their probability."""
    knn = knn_distribution(neighbours, config.k, config.temperature)
    weight = config.weight_knn if knn else 0.0
    classifier: dict[str, float] = {}
    for name, p in zip(classes, probabilities, strict=True):
        classifier[name] = classifier.get(name, 0.0) + float(p)
    scores = []
    for name in classifier.keys() | knn.keys():
        p_clf, p_knn = classifier.get(name, 0.0), knn.get(name, 0.0)
        fused = weight * p_knn + (1.0 - weight) * p_clf
        if fused > 0.0 or p_clf > 0.0 or p_knn > 0.0:
            scores.append(RankedSpecies(name, fused, p_clf, p_knn))
    scores.sort(key=lambda s: (-s.score, -s.classifier, s.name))
    return scores


def decide(ranking: Sequence[RankedSpecies], neighbours: Sequence[Neighbour], config: FusionConfig) -> Decision:
    """confident, needs_review (low score, small margin, classifier and kNN disagree) or no_match."""
    top = ranking[0] if ranking else RankedSpecies("", 0.0, 0.0, 0.0)
    second = ranking[1].score if len(ranking) > 1 else 0.0
    uncertainty = 1.0 - (top.score - second)
    nearest = max((n.similarity for n in neighbours), default=-1.0)
    classifier_top = max((s.classifier for s in ranking), default=0.0)
    if nearest < config.no_match_similarity and classifier_top < config.no_match_classifier:
        return Decision(NO_MATCH, ("far_from_references", "classifier_unsure"), uncertainty)
    reasons = []
    if top.score < config.confident_score:
        reasons.append("low_score")
    if top.score - second < config.min_margin:
        reasons.append("small_margin")
    if neighbours and 0.0 < config.weight_knn < 1.0:
        knn_top = max(ranking, key=lambda s: s.knn)
        clf_top = max(ranking, key=lambda s: s.classifier)
        if knn_top.name != clf_top.name:
            reasons.append("disagreement")
    return Decision(NEEDS_REVIEW if reasons else CONFIDENT, tuple(reasons), uncertainty)
