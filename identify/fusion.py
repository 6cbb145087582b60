"""Fusion of the neighbours' votes with the classifier, and the decision (Jia et al. 2021, arXiv 2112.08459).

    p(c) = lambda * p_kNN(c) + (1 - lambda) * p_clf'(c),   p_kNN(c) ∝ sum over top-k with y_i = c of exp(s_i / T)

with s_i the cosine similarity of L2-normalised embeddings. The label space is the union of the classifier's
classes and the references' species, so a species known only through its references can still win.

A species outside the classifier's classes must not be penalised for it: the classifier's silence about it is
absence of evidence, not evidence against. So the classifier keeps a "none of my classes" share
u = 1 - max p_clf (its own uncertainty: the maximum-softmax-probability baseline of open-set recognition,
Hendrycks & Gimpel 2017), and the species outside its classes take as much of it as the neighbours back them:

    p_clf'(o) = u * p_kNN(o)  for o outside the classes,   p_clf'(c) = (1 - u * sum_O p_kNN) * p_clf(c)  for classes.

What of u the neighbours do not back stays with the classes, so a stray far neighbour of a new species takes
almost nothing. When no voted species is outside, p_clf' = p_clf and this is Jia et al.'s formula exactly.
Scores are then calibrated (identify.calibration) before the decision. Open-set rejection follows Sun et al. 2022
(arXiv 2204.06507): far from every reference, and an unsure classifier, means no match."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Sequence

import numpy as np

from identify.calibration import Calibration
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
    score: float  # fused, then calibrated: the probability shown to a person
    classifier: float  # p_clf, the classifier's own probability (0 for a species outside its classes)
    knn: float  # p_kNN
    taxon: Taxon | None = None
    in_classes: bool = True  # whether the classifier could have named it
    fused: float | None = None  # the fused score before calibration (None: not calibrated)
    prior: float | None = None  # p(taxon | place, week), when a place and date were given (identify.prior)
    expected_here: bool | None = None  # recorded near the place in season

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
    classifier_part = open_set_classifier(classifier, knn)
    scores = []
    for name in classifier.keys() | knn.keys():
        p_clf, p_knn = classifier.get(name, 0.0), knn.get(name, 0.0)
        fused = weight * p_knn + (1.0 - weight) * classifier_part.get(name, 0.0)
        if fused > 0.0 or p_clf > 0.0 or p_knn > 0.0:
            scores.append(RankedSpecies(name, fused, p_clf, p_knn, in_classes=name in classifier, fused=fused))
    scores.sort(key=lambda s: (-s.score, -s.classifier, s.name))
    return scores


def confidence_features(ranking: Sequence[RankedSpecies], neighbours: Sequence[Neighbour]) -> np.ndarray:
    """What the evidence says about the top answer of a fused ranking (before calibration): its fused score
    (and its log), the margin to the second, whether the classifier's and the neighbours' favourites agree,
    the neighbours' and the classifier's top shares, whether the classifier could have named it, and the nearest
    similarity. The confidence model (identify.calibration) weighs them."""
    if not ranking:
        return np.zeros(8)
    top = ranking[0]
    first = top.fused if top.fused is not None else top.score
    second = (ranking[1].fused if ranking[1].fused is not None else ranking[1].score) if len(ranking) > 1 else 0.0
    agree = max(ranking, key=lambda s: s.classifier).name == max(ranking, key=lambda s: s.knn).name
    nearest = max((n.similarity for n in neighbours), default=0.0)
    return np.array([first, first - second, float(agree), max(s.knn for s in ranking),
                     max(s.classifier for s in ranking), float(not top.in_classes), nearest,
                     float(np.log(max(first, 1e-9)))])


def calibrated(ranking: Sequence[RankedSpecies], calibration: Calibration,
               neighbours: Sequence[Neighbour] = ()) -> list[RankedSpecies]:
    """The ranking with calibrated scores (the fused ones kept beside them), best first."""
    if calibration.method == "none" or not ranking:
        return list(ranking)
    fused = np.array([s.fused if s.fused is not None else s.score for s in ranking])
    if calibration.method == "confidence":
        top = float(calibration.confidence(confidence_features(ranking, neighbours)[None, :])[0])
        rest = fused[1:].sum()
        scores = np.concatenate([[top], (1.0 - top) * fused[1:] / rest if rest > 0 else fused[1:] * 0.0])
    else:
        scores = calibration.apply(fused)
    out = [replace(s, score=float(score)) for s, score in zip(ranking, scores, strict=True)]
    out.sort(key=lambda s: (-s.score, -s.classifier, s.name))
    return out


def with_prior(ranking: Sequence[RankedSpecies], priors: dict[str, Any], floor: float) -> list[RankedSpecies]:
    """score × max(prior, floor), renormalised over the ranking (iNaturalist's combination), best first.

    `priors` maps scientific names to identify.prior.TaxonPrior. A taxon never recorded anywhere has only the
    floor; a label without a taxon gets the mean factor of those with one, so the prior neither helps nor
    hurts it against them."""
    if not ranking or not priors:
        return list(ranking)
    factors: list[float | None] = []
    for species in ranking:
        known = priors.get(species.taxon.scientific_name) if species.taxon is not None else None
        factors.append(max(known.probability, floor) if known is not None else (floor if species.taxon else None))
    named = [f for f in factors if f is not None]
    neutral = sum(named) / len(named) if named else 1.0
    weighted = [s.score * (f if f is not None else neutral) for s, f in zip(ranking, factors, strict=True)]
    total = sum(weighted) or 1.0
    out = []
    for species, weight in zip(ranking, weighted, strict=True):
        known = priors.get(species.taxon.scientific_name) if species.taxon is not None else None
        out.append(replace(species, score=weight / total, prior=known.probability if known else (0.0 if species.taxon else None),
                           expected_here=known.expected_here if known else (False if species.taxon else None)))
    out.sort(key=lambda s: (-s.score, -s.classifier, s.name))
    return out


def unknown_share(classifier: dict[str, float]) -> float:
    """The classifier's "none of my classes" share: 1 - its top probability."""
    return 1.0 - max(classifier.values(), default=0.0)


def open_set_classifier(classifier: dict[str, float], knn: dict[str, float]) -> dict[str, float]:
    """p_clf' (see the module): the classifier's distribution with its unknown share handed to the species
    outside its classes as far as the neighbours back them; unchanged when no such species is voted."""
    outside = {name: vote for name, vote in knn.items() if name not in classifier and vote > 0.0}
    if not outside:
        return classifier
    share = unknown_share(classifier)
    backed = share * sum(outside.values())
    return {**{name: (1.0 - backed) * p for name, p in classifier.items()},
            **{name: share * vote for name, vote in outside.items()}}


def decide(ranking: Sequence[RankedSpecies], neighbours: Sequence[Neighbour], config: FusionConfig,
           blockers: Sequence[str] = ()) -> Decision:
    """confident, needs_review (low score, small margin, classifier and kNN disagree, or a `blockers` reason:
    identify.openset's) or no_match."""
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
    if top.expected_here is False:  # a rarity for the place and season: a curator should see it
        reasons.append("unusual_for_place_date")
    reasons += blockers
    if not reasons:
        return Decision(CONFIDENT, (), uncertainty)
    # Why the score is low, for the curator. Not a rule of its own: the calibrated score already weighs a
    # disagreement, and the threshold on it is what bounds the error.
    if neighbours and 0.0 < config.weight_knn < 1.0:
        knn_top = max(ranking, key=lambda s: s.knn)
        clf_top = max(ranking, key=lambda s: s.classifier)
        if knn_top.name != clf_top.name and knn_top.in_classes:  # only where the classifier could have named it
            reasons.append("disagreement")
    return Decision(NEEDS_REVIEW, tuple(reasons), uncertainty)
