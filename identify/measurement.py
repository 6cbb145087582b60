"""Labelled queries answered as the service answers them, and what is measured of the answers: the data a model
gave (EvaluationData), in the service's label space; the nearest references of every query; the vectorised
classifier, kNN and fusion matrices of the sweep; each query decided through identify.scoring.answer; the
metrics (top-k, ECE, coverage-risk); and `check`, the stored configuration measured as it is.

identify.evaluation builds the report on these: it chooses, fits and holds out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from identify.calibration import Calibration, FittedOn, clopper_pearson_upper
from identify.config import FusionConfig
from identify.fusion import CONFIDENT, NEEDS_REVIEW, Neighbour, confidence_features, decide, fuse
from identify.observation import Place
from identify.openset import own_spread, support_of
from identify.prior import PriorModel
from identify.rollup import RANKS, roll_up
from identify.scoring import Answer, SpeciesNames, answer, ranks_of
from identify.taxonomy import Taxon
from identify.vectors.plan import exact_knn


ECE_BINS = 15


@dataclass(frozen=True)
class EvaluationData:
    """What a model said about labelled queries, and the labelled references it searches."""

    classes: list[str]  # the classifier's classes, in probability order
    probabilities: np.ndarray  # (queries, classes)
    query_embeddings: np.ndarray  # (queries, dim)
    query_labels: list[str]
    reference_embeddings: np.ndarray  # (references, dim)
    reference_labels: list[str]
    kind: str  # "labelled photos" or "simulation": the report says which
    description: str = ""
    taxa: Mapping[str, Taxon | None] = field(default_factory=dict)  # label -> taxon, for the roll-up
    # Where and when each query was taken, and occurrence records (scientific name, lat, lon, date): the prior.
    query_places: list[Place | None] | None = None
    occurrences: list[tuple[str, float, float, Any]] | None = None
    uninformative_occurrences: list[tuple[str, float, float, Any]] | None = None  # spread evenly: a control
    prior_model: PriorModel | None = None  # the deployment's own prior, where occurrences are not given as records
    # More photos of each queried bird (queries, views - 1, ...): how a sighting's photos are pooled.
    view_probabilities: np.ndarray | None = None
    view_embeddings: np.ndarray | None = None
    query_paths: list[str] | None = None  # where each query came from (queries.csv names it)
    query_groups: list[str | None] | None = None  # the individual or source of each query: split as one
    reference_probabilities: np.ndarray | None = None  # (references, classes): the classifier on each reference
    reference_groups: list[str | None] | None = None  # the individual or source of each reference


@dataclass
class Neighbourhood:
    """The nearest references of every query (exact search), enough for the largest k of the sweep."""

    similarities: np.ndarray  # (queries, k_max), best first
    reference_index: np.ndarray  # (queries, k_max), positions in reference_labels


def in_label_space(data: EvaluationData) -> tuple[EvaluationData, SpeciesNames]:
    """The data as the service names it: every label (classes, queries, references) replaced by the species it
    stands for (identify.taxonomy.species_key), so a query folder `Gallus_gallus` and the model's class `cock`
    are one species, `Gallus gallus`; its `taxa` know those species names too (truths and roll-ups look them up)."""
    names = SpeciesNames(data.classes, data.taxa)
    canonical = names.canonical
    served = replace(data, classes=names.classes, query_labels=[canonical(label) for label in data.query_labels],
                     reference_labels=[canonical(label) for label in data.reference_labels], taxa=names.taxa)
    return served, SpeciesNames(served.classes, served.taxa)


def prior_of(records: list[tuple[str, float, float, Any]]) -> PriorModel:
    """The place-and-season prior of these occurrence records (scientific name, lat, lon, date)."""
    model = PriorModel(())
    model.add_records(records)
    return model


def served_prior(data: EvaluationData) -> PriorModel | None:
    """The prior the service would apply to these queries: where they have a place and records exist."""
    if data.query_places is None or not any(data.query_places):
        return None
    if data.prior_model is not None and not data.prior_model.empty:
        return data.prior_model
    return prior_of(data.occurrences) if data.occurrences else None


def neighbourhood(data: EvaluationData, k_max: int) -> Neighbourhood:
    similarities, positions = exact_knn(data.query_embeddings, data.reference_embeddings, k_max)
    return Neighbourhood(similarities, positions)


@dataclass
class LabelSpace:
    """The union of the classifier's classes and the reference species, with each query's true column."""

    names: list[str]
    clf: np.ndarray  # (queries, labels): classifier probabilities in label-space columns
    is_class: np.ndarray  # (labels,): whether the classifier can name it
    reference_column: np.ndarray  # (references,)
    truth: np.ndarray  # (queries,): column of the true label (-1: a label nobody can name)

    @classmethod
    def of(cls, data: EvaluationData) -> "LabelSpace":
        names = sorted(set(data.classes) | set(data.reference_labels))
        column = {name: i for i, name in enumerate(names)}
        clf = np.zeros((len(data.query_labels), len(names)), dtype=np.float64)
        # classes of one taxon share a column and pool their probability, as identify.fusion.fuse does
        np.add.at(clf.T, np.array([column[c] for c in data.classes]), data.probabilities.T)
        is_class = np.isin(np.arange(len(names)), [column[c] for c in data.classes])
        return cls(names, clf, is_class, np.array([column[r] for r in data.reference_labels]),
                   np.array([column.get(q, -1) for q in data.query_labels]))


def knn_matrix(space: LabelSpace, hood: Neighbourhood, k: int, temperature: float) -> np.ndarray:
    """p_kNN per query over the label space: softmax of s_i / T over the k nearest, summed per species."""
    similarities = hood.similarities[:, :k].astype(np.float64)
    weights = np.exp((similarities - similarities.max(axis=1, keepdims=True)) / temperature)
    weights /= weights.sum(axis=1, keepdims=True)
    out = np.zeros_like(space.clf)
    rows = np.repeat(np.arange(len(out)), similarities.shape[1])
    np.add.at(out, (rows, space.reference_column[hood.reference_index[:, :k]].ravel()), weights.ravel())
    return out


def fused_matrix(space: LabelSpace, knn: np.ndarray, weight: float) -> np.ndarray:
    """identify.fusion.fuse for every query at once: the classifier's unknown share (1 - max p) goes to the
    species outside its classes as far as the neighbours back them (Jia et al. when none is voted)."""
    outside = knn * ~space.is_class
    unknown = 1.0 - space.clf.max(axis=1, keepdims=True)
    backed = unknown * outside.sum(axis=1, keepdims=True)
    open_set = (1.0 - backed) * space.clf + unknown * outside
    return weight * knn + (1.0 - weight) * open_set


def top_k_accuracy(scores: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Share of queries whose true column is among the k best with a score above zero (a species nobody voted
    for is not an answer, even when fewer than k species have votes)."""
    if len(truth) == 0:
        return 0.0
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    hit = (best == truth[:, None]) & (np.take_along_axis(scores, best, axis=1) > 0)
    return float(np.mean(hit.any(axis=1)))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-width confidence bins (low, high] (Guo et al. 2017), and the bins for a reliability diagram."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        members = which == b
        if not members.any():
            continue
        accuracy, mean_confidence = float(correct[members].mean()), float(confidence[members].mean())
        ece += members.mean() * abs(accuracy - mean_confidence)
        table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(members.sum()),
                      "accuracy": accuracy, "confidence": mean_confidence})
    return float(ece), table


def coverage_risk(confidence: np.ndarray, correct: np.ndarray) -> dict[str, list[float] | float]:
    """Answer the most confident first: coverage (share answered) against risk (error among them)."""
    order = np.argsort(-confidence, kind="stable")
    errors = np.cumsum(~correct[order])
    answered = np.arange(1, len(order) + 1)
    risk = errors / answered
    return {"coverage": (answered / len(order)).tolist(), "risk": risk.tolist(),
            "threshold": confidence[order].tolist(), "aurc": float(risk.mean()) if len(risk) else 0.0}


@dataclass
class Decided:
    """Per query of a split, through identify.fusion: top-1 fused and calibrated scores, right or not, the
    decision on the species (an answer confident only at a higher rank is `needs_review` here), whether only the
    threshold stood in the way, the roll-up, and the best taxon's summed score at each rank and whether it is
    the truth's (what a rank's threshold is chosen on: identify.risk.rank_controls)."""

    rows: np.ndarray
    fused_top: np.ndarray
    top: np.ndarray  # calibrated
    correct: np.ndarray
    decisions: list[str]
    eligible: np.ndarray  # confident at a threshold of 0: nothing but the score stood in the way
    rollup_taxa: list[str | None]  # the taxon rolled up to, for queries that are not confident
    rollup_ranks: list[str | None]
    rollup_correct: np.ndarray
    answers: list[Answer]  # as identify.scoring.answer gave them: what the service would have answered
    rollup_certified: np.ndarray  # confident at the roll-up's rank (identify.rollup.certified_rank)
    rank_scores: np.ndarray  # [query, rank of RANKS]: the best taxon's summed score (-1: no taxon at that rank)
    rank_right: np.ndarray  # [query, rank of RANKS]: that taxon is the truth's

    @property
    def species_confident(self) -> np.ndarray:
        return np.array([d == CONFIDENT for d in self.decisions], dtype=bool)

    def answered_ranks(self) -> tuple[np.ndarray, np.ndarray]:
        """The rank each query was answered at (species, genus, family, order, none) and whether it was right
        there."""
        confident = self.species_confident
        ranks = np.array(["species" if sure else (rank if rank and certified else "none") for sure, rank, certified
                          in zip(confident, self.rollup_ranks, self.rollup_certified, strict=True)])
        return ranks, np.where(confident, self.correct, self.rollup_correct & self.rollup_certified)


def _neighbours(data: EvaluationData, hood: Neighbourhood, row: int, k: int) -> list[Neighbour]:
    return [Neighbour(int(i), data.reference_labels[i], float(s))
            for s, i in zip(hood.similarities[row, :k], hood.reference_index[row, :k], strict=True)]


def evidence_features(data: EvaluationData, hood: Neighbourhood, rows: np.ndarray,
                      config: FusionConfig) -> tuple[np.ndarray, np.ndarray]:
    """The confidence model's features of each query's fused ranking (before calibration, as
    identify.fusion.calibrated computes them for the served answer), and whether its top is right."""
    features, correct = [], []
    for row in rows:
        neighbours = _neighbours(data, hood, row, config.k)
        ranking = fuse(data.classes, data.probabilities[row], neighbours, config)
        features.append(confidence_features(ranking, neighbours))
        correct.append(bool(ranking) and ranking[0].name == data.query_labels[row])
    return np.array(features).reshape(len(rows), -1), np.array(correct, dtype=bool)


def spread_of(data: EvaluationData, config: FusionConfig) -> dict[str, list[float]] | None:
    """Each species' own spread over the references (identify.openset), when the spread rule is on."""
    if config.spread_quantile <= 0.0:
        return None
    groups = data.reference_groups or [None] * len(data.reference_labels)
    return own_spread(data.reference_embeddings, data.reference_labels, groups)


def decide_rows(data: EvaluationData, hood: Neighbourhood, rows: np.ndarray, config: FusionConfig,
                calibration: Calibration, prior: PriorModel | None = None) -> Decided:
    """Each query answered by identify.scoring.answer, the service's own decision function, with its place when
    a prior is given."""
    names = SpeciesNames(data.classes, data.taxa)
    counts = dict(Counter(data.reference_labels))
    floors = spread_of(data, config)
    answers = []
    for row in rows:
        neighbours = _neighbours(data, hood, row, config.k)
        place = data.query_places[row] if prior is not None and data.query_places is not None else None
        answers.append(answer(data.probabilities[row], neighbours, names, config, calibration, prior, place,
                              reference_counts=counts, spread_floors=floors))
    return _decided(data, rows, answers, config)


def under_rules(data: EvaluationData, decided: Decided, config: FusionConfig) -> Decided:
    """The same answers decided again under other open-set rules (identify.openset) and thresholds: the scores
    and rankings do not depend on them, so nothing is fused again (what choosing the rules sweeps over)."""
    counts = SpeciesNames(data.classes, data.taxa).counts(dict(Counter(data.reference_labels)))
    floors = spread_of(data, config)
    answers = []
    for a in decided.answers:
        support = support_of(a.ranking, a.votes, counts, config, floors)
        decision = decide(a.ranking, a.votes, replace(config, confident_score=a.threshold), support.reasons(config))
        rollup = roll_up(a.ranking, config.confident_score) if decision.decision != CONFIDENT else None
        answers.append(replace(a, support=support, decision=decision, rollup=rollup))  # species only: no rank
    return _decided(data, decided.rows, answers, config)


def _decided(data: EvaluationData, rows: np.ndarray, answers: list[Answer], config: FusionConfig) -> Decided:
    # every answer's best taxon per rank, worked out once and kept with it (answers decided again keep them)
    answers = [a if a.by_rank else replace(a, by_rank=ranks_of(a.alone)) for a in answers]
    anywhere = replace(config, confident_score=0.0)
    eligible, rollup_correct = [], []
    for decided, row in zip(answers, rows, strict=True):
        # confident at a threshold of 0: nothing but the score stood in the way (what the threshold controls);
        # the ranking does not depend on the threshold, so only the decision is made again
        eligible.append(decide(decided.ranking, decided.votes, anywhere,
                               decided.support.reasons(config)).decision == CONFIDENT)
        rolled, truth = decided.rollup, data.taxa.get(data.query_labels[row])
        rollup_correct.append(bool(rolled and truth and getattr(truth, rolled.rank) == rolled.scientific_name))
    tops = [a.top for a in answers]
    truths = [data.taxa.get(data.query_labels[row]) for row in rows]
    rank_scores = np.array([[t.score if t is not None else -1.0 for t in a.by_rank]
                            for a in answers]).reshape(len(answers), len(RANKS))
    rank_right = np.array([[t is not None and truth is not None and getattr(truth, rank) == t.scientific_name
                            for rank, t in zip(RANKS, a.by_rank, strict=True)]
                           for a, truth in zip(answers, truths, strict=True)], dtype=bool).reshape(len(answers), len(RANKS))
    return Decided(
        rows, np.array([t.fused if t and t.fused is not None else (t.score if t else 0.0) for t in tops]),
        np.array([t.score if t else 0.0 for t in tops]),
        np.array([t is not None and t.name == data.query_labels[row] for t, row in zip(tops, rows, strict=True)],
                 dtype=bool),
        [str(a.decision.decision) if a.rank in (None, "species") else str(NEEDS_REVIEW) for a in answers],
        np.array(eligible, dtype=bool), [a.rollup.scientific_name if a.rollup else None for a in answers],
        [a.rollup.rank if a.rollup else None for a in answers], np.array(rollup_correct, dtype=bool), answers,
        np.array([bool(a.rollup and a.rollup.certified) for a in answers], dtype=bool), rank_scores, rank_right)


def served_accuracy(data: EvaluationData, decided: Decided) -> dict[str, float]:
    """Top-1 and top-5 of the answers as the service gives them."""
    truths = [data.query_labels[row] for row in decided.rows]
    best = [[s.name for s in a.ranking[:5]] for a in decided.answers]
    return {"top1": _share(np.array([b[:1] == [t] for b, t in zip(best, truths, strict=True)], dtype=bool)),
            "top5": _share(np.array([t in b for b, t in zip(best, truths, strict=True)], dtype=bool))}


def query_group(data: EvaluationData, label: str) -> str:
    """known: a species the classifier can name; new: one only references know."""
    return "known" if label in set(data.classes) else "new"


def answer_rows(data: EvaluationData, decided: Decided) -> list[dict[str, Any]]:
    """One row per query as the service answered it: queries.csv."""
    rows = []
    for a, row in zip(decided.answers, decided.rows, strict=True):
        top = a.top
        rows.append({"path": data.query_paths[row] if data.query_paths else f"query {row}",
                     "truth": data.query_labels[row], "group": query_group(data, data.query_labels[row]),
                     "top_species": top.name if top else "", "score": round(top.score, 6) if top else 0.0,
                     "decision": str(a.decision.decision), "reasons": " ".join(a.decision.reasons),
                     "correct": bool(top and top.name == data.query_labels[row])})
    return rows


def _share(mask: np.ndarray) -> float:
    return float(mask.mean()) if len(mask) else 0.0


def _error_among(confident: np.ndarray, correct: np.ndarray) -> float:
    return float(1.0 - correct[confident].mean()) if confident.any() else 0.0


@dataclass
class Check:
    """The stored configuration measured as it is, on labelled queries it was not fitted on: nothing refitted."""

    kind: str
    description: str
    queries: int
    config: FusionConfig
    calibration: Calibration
    top1: float
    coverage: float
    confident: int
    errors: int
    realised_error: float
    upper_bound: float  # Clopper-Pearson, at the config's risk_confidence
    groups: dict[str, dict[str, Any]]  # known / new species: the same figures per group
    answers: list[dict[str, Any]]
    answer_groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # per risk group, its threshold
    species: dict[str, dict[str, Any]] = field(default_factory=dict)  # per true species
    calibration_state: dict[str, Any] = field(default_factory=dict)  # against these references (CalibrationState)

    @property
    def within_target(self) -> bool:
        return self.upper_bound <= self.config.target_error

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "description": self.description, "queries": self.queries,
                "config": {"weight_knn": self.config.weight_knn, "k": self.config.k,
                           "temperature": self.config.temperature, "confident_score": self.config.confident_score,
                           "target_error": self.config.target_error, "risk_confidence": self.config.risk_confidence},
                "calibration": self.calibration.method, "top1": self.top1, "coverage": self.coverage,
                "confident": self.confident, "errors": self.errors, "realised_error": self.realised_error,
                "upper_bound": self.upper_bound, "within_target": self.within_target, "groups": self.groups,
                "answer_groups": self.answer_groups, "species": self.species,
                "calibration_state": self.calibration_state}


def _checked_figures(correct: np.ndarray, confident: np.ndarray, confidence: float) -> dict[str, Any]:
    errors = int((confident & ~correct).sum())
    return {"queries": int(len(correct)), "top1": _share(correct), "coverage": _share(confident),
            "confident": int(confident.sum()), "errors": errors, "realised_error": _error_among(confident, correct),
            "upper_bound": clopper_pearson_upper(errors, int(confident.sum()), confidence)}


def check(data: EvaluationData, config: FusionConfig, calibration: Calibration) -> Check:
    """`config` and `calibration` (what a deployment serves) measured on every query of `data` as they are:
    realised error among confident answers with its upper bound, coverage and top-1, overall and per group.
    Run it after the references change, on new labelled photos, to learn whether a stored threshold still holds."""
    from identify.risk import group_report  # risk builds on this module

    data, _ = in_label_space(data)
    hood = neighbourhood(data, max(config.k, 1))
    everything = np.arange(len(data.query_labels))
    prior = served_prior(data)
    decided = decide_rows(data, hood, everything, config, calibration, prior)
    report = group_report(data, decided, config, calibration)
    state = calibration.state(FittedOn.of_counts(Counter(data.reference_labels), prior is not None))
    confident = np.array([d == CONFIDENT for d in decided.decisions], dtype=bool)
    groups = np.array([query_group(data, data.query_labels[row]) for row in everything])
    overall = _checked_figures(decided.correct, confident, config.risk_confidence)
    per_group = {name: _checked_figures(decided.correct[groups == name], confident[groups == name],
                                        config.risk_confidence)
                 for name in ("known", "new") if (groups == name).any()}
    return Check(data.kind, data.description, len(everything), config, calibration, overall["top1"],
                 overall["coverage"], overall["confident"], overall["errors"], overall["realised_error"],
                 overall["upper_bound"], per_group, answer_rows(data, decided), report["by_answer"],
                 report["species"], state.to_dict())
