"""Quality on labelled queries: the classifier alone, the neighbours alone and their fusion (top-1, top-5), the
calibration of the fused score, the coverage-risk curve of the decision, and a sweep over lambda, k and T.

Works on arrays (probabilities, embeddings, labels), so the same code measures a real model on photos and the
seeded simulation. The sweep is vectorised over the label space; the chosen setting is then re-scored query by
query through `identify.fusion` itself, so the reported decisions are exactly the service's."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from identify.config import FusionConfig
from identify.fusion import CONFIDENT, NEEDS_REVIEW, NO_MATCH, Neighbour, decide, fuse
from identify.vectors.plan import exact_knn

LAMBDAS = tuple(round(x, 1) for x in np.linspace(0.0, 1.0, 11))
KS = (1, 5, 10, 20, 50)
TEMPERATURES = (0.01, 0.03, 0.07, 0.1, 0.3, 1.0)
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


@dataclass
class Neighbourhood:
    """The nearest references of every query (exact search), enough for the largest k of the sweep."""

    similarities: np.ndarray  # (queries, k_max), best first
    reference_index: np.ndarray  # (queries, k_max), positions in reference_labels


def neighbourhood(data: EvaluationData, k_max: int) -> Neighbourhood:
    similarities, positions = exact_knn(data.query_embeddings, data.reference_embeddings, k_max)
    return Neighbourhood(similarities, positions)


@dataclass
class LabelSpace:
    """The union of the classifier's classes and the reference species, with each query's true column."""

    names: list[str]
    clf: np.ndarray  # (queries, labels): classifier probabilities in label-space columns
    reference_column: np.ndarray  # (references,)
    truth: np.ndarray  # (queries,): column of the true label (-1: a label nobody can name)

    @classmethod
    def of(cls, data: EvaluationData) -> "LabelSpace":
        names = sorted(set(data.classes) | set(data.reference_labels))
        column = {name: i for i, name in enumerate(names)}
        clf = np.zeros((len(data.query_labels), len(names)), dtype=np.float64)
        clf[:, [column[c] for c in data.classes]] = data.probabilities
        return cls(names, clf, np.array([column[r] for r in data.reference_labels]),
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


def top_k_accuracy(scores: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Share of queries whose true column is among the k best with a score above zero (a species nobody voted
    for is not an answer, even when fewer than k species have votes)."""
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
            "threshold": confidence[order].tolist(), "aurc": float(risk.mean())}


@dataclass
class Evaluation:
    kind: str
    description: str
    queries: int
    references: int
    config: FusionConfig  # the setting the decisions below were made with
    accuracy: dict[str, dict[str, float]]  # method -> {"top1", "top5"}
    ece: dict[str, float]
    reliability: list[dict[str, float]]
    curve: dict[str, Any]
    decisions: dict[str, float]  # shares of confident / needs_review / no_match, error among confident
    sweep: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "description": self.description, "queries": self.queries,
            "references": self.references,
            "config": {"weight_knn": self.config.weight_knn, "k": self.config.k, "temperature": self.config.temperature},
            "accuracy": self.accuracy, "ece": self.ece, "reliability": self.reliability, "coverage_risk": self.curve,
            "decisions": self.decisions, "sweep": self.sweep, "best": self.best,
        }


def sweep(space: LabelSpace, hood: Neighbourhood, lambdas: Sequence[float] = LAMBDAS, ks: Sequence[int] = KS,
          temperatures: Sequence[float] = TEMPERATURES) -> list[dict[str, float]]:
    """Fused top-1 accuracy for every (lambda, k, T)."""
    rows = []
    for k, temperature in itertools.product(ks, temperatures):
        knn = knn_matrix(space, hood, k, temperature)
        for weight in lambdas:
            fused = weight * knn + (1 - weight) * space.clf
            rows.append({"weight_knn": float(weight), "k": int(k), "temperature": float(temperature),
                         "top1": top_k_accuracy(fused, space.truth, 1)})
    return rows


def best_setting(rows: list[dict[str, float]]) -> dict[str, float]:
    """The most accurate setting; among equals, the one closest to an even mix with the fewest neighbours."""
    return max(rows, key=lambda r: (r["top1"], -abs(r["weight_knn"] - 0.5), -r["k"], r["temperature"]))


def _decisions(data: EvaluationData, hood: Neighbourhood, config: FusionConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per query, through the service's own fuse() and decide(): top-1 score, correct?, decision."""
    confidence, correct, decisions = [], [], []
    for row, label in enumerate(data.query_labels):
        neighbours = [Neighbour(int(i), data.reference_labels[i], float(s))
                      for s, i in zip(hood.similarities[row, : config.k], hood.reference_index[row, : config.k], strict=True)]
        ranking = fuse(data.classes, data.probabilities[row], neighbours, config)
        confidence.append(ranking[0].score)
        correct.append(ranking[0].name == label)
        decisions.append(decide(ranking, neighbours, config).decision)
    return np.array(confidence), np.array(correct), decisions


def evaluate(data: EvaluationData, config: FusionConfig, run_sweep: bool = True) -> Evaluation:
    """Every number of the report. The decisions use `config`; the sweep names the best (lambda, k, T)."""
    ks = tuple(k for k in KS if k <= len(data.reference_labels)) or (len(data.reference_labels),)
    hood = neighbourhood(data, max(max(ks), config.k))
    space = LabelSpace.of(data)
    knn = knn_matrix(space, hood, config.k, config.temperature)
    fused = config.weight_knn * knn + (1 - config.weight_knn) * space.clf
    accuracy = {name: {"top1": top_k_accuracy(scores, space.truth, 1), "top5": top_k_accuracy(scores, space.truth, 5)}
                for name, scores in (("classifier", space.clf), ("knn", knn), ("fusion", fused))}
    confidence, correct, decisions = _decisions(data, hood, config)
    ece, reliability = expected_calibration_error(confidence, correct)
    classifier_ece, _ = expected_calibration_error(space.clf.max(axis=1), space.clf.argmax(axis=1) == space.truth)
    confident = np.array([d == CONFIDENT for d in decisions])
    share = {d: float(np.mean([x == d for x in decisions])) for d in (CONFIDENT, NEEDS_REVIEW, NO_MATCH)}
    result = Evaluation(
        kind=data.kind, description=data.description, queries=len(data.query_labels),
        references=len(data.reference_labels), config=config, accuracy=accuracy,
        ece={"fusion": ece, "classifier": classifier_ece}, reliability=reliability,
        curve=coverage_risk(confidence, correct),
        decisions={**share, "review_rate": share[NEEDS_REVIEW] + share[NO_MATCH],
                   "error_when_confident": float(1 - correct[confident].mean()) if confident.any() else 0.0},
    )
    if run_sweep:
        result.sweep = sweep(space, hood, ks=ks)
        result.best = best_setting(result.sweep)
    return result
