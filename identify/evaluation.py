"""Quality on labelled queries, measured the way the service decides: the classifier alone, the neighbours alone,
their (open-set) fusion, calibration, the risk-controlled `confident` threshold and the roll-up.

Nothing is reported on the data it was chosen or fitted on. The queries are split, stratified by species, into
- a tuning split: lambda, k and T are chosen there (with a 5-fold cross-validation estimate of how good the
  choice is), and the calibrator is fitted there;
- a calibration split: the `confident` threshold is chosen there (identify.calibration: Learn-then-Test with
  Clopper–Pearson bounds), for the decision exactly as identify.fusion makes it;
- a test split: every figure of the report.
With too few queries to split (fewer than MIN_HELD_OUT), everything is measured on all of them at the given
settings, and the report says so.

Works on arrays (probabilities, embeddings, labels), so the same code measures a real model on photos and the
seeded simulation. Everything is measured in the service's label space (identify.scoring.SpeciesNames: labels of
one taxon are one species, named by the label that stands for it). The sweep is vectorised; every reported
decision, the calibrator's fit and the threshold's choice go query by query through identify.scoring.answer,
the function that answers uploads and `predict`."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from identify.calibration import (Calibration, choose_threshold, clopper_pearson_upper, fit_confidence, fit_isotonic,
                                  fit_temperature)
from identify.config import FusionConfig
from identify.fusion import CONFIDENT, NEEDS_REVIEW, NO_MATCH, Neighbour, confidence_features, decide, fuse
from identify.prior import Place, PriorModel
from identify.scoring import Answer, SpeciesNames, answer
from identify.taxonomy import Taxon
from identify.vectors.plan import exact_knn

LAMBDAS = tuple(round(x, 1) for x in np.linspace(0.0, 1.0, 11))
KS = (1, 5, 10, 20, 50)
TEMPERATURES = (0.01, 0.03, 0.07, 0.1, 0.3, 1.0)
ECE_BINS = 15
SPLITS = (0.4, 0.3, 0.3)  # tuning, calibration, test
MIN_HELD_OUT = 10  # queries; fewer cannot be split three ways
FOLDS = 5
CLOSE_REFERENCES = 5  # "a new species with five or more close references": of its own among the 10 nearest


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
    query_places: list[Place] | None = None
    occurrences: list[tuple[str, float, float, Any]] | None = None
    uninformative_occurrences: list[tuple[str, float, float, Any]] | None = None  # spread evenly: a control
    # More photos of each queried bird (queries, views - 1, ...): how a sighting's photos are pooled.
    view_probabilities: np.ndarray | None = None
    view_embeddings: np.ndarray | None = None
    query_paths: list[str] | None = None  # where each query came from (queries.csv names it)


@dataclass
class Neighbourhood:
    """The nearest references of every query (exact search), enough for the largest k of the sweep."""

    similarities: np.ndarray  # (queries, k_max), best first
    reference_index: np.ndarray  # (queries, k_max), positions in reference_labels


def in_label_space(data: EvaluationData) -> tuple[EvaluationData, SpeciesNames]:
    """The data as the service names it: every label (classes, queries, references) replaced by the label that
    stands for its taxon, so a query folder `Gallus gallus` and the model's class `cock` are one species."""
    names = SpeciesNames(data.classes, data.taxa)
    canonical = names.canonical
    served = replace(data, classes=names.classes, query_labels=[canonical(label) for label in data.query_labels],
                     reference_labels=[canonical(label) for label in data.reference_labels])
    return served, SpeciesNames(served.classes, data.taxa)


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


# ---- choosing lambda, k and T ---------------------------------------------------------------------------------
def sweep_hits(space: LabelSpace, hood: Neighbourhood, lambdas: Sequence[float] = LAMBDAS, ks: Sequence[int] = KS,
               temperatures: Sequence[float] = TEMPERATURES) -> tuple[list[dict[str, float]], np.ndarray]:
    """Every (lambda, k, T), and whether each query's fused top-1 is right under it: (settings, hits[s, q])."""
    settings, hits = [], []
    for k, temperature in itertools.product(ks, temperatures):
        knn = knn_matrix(space, hood, k, temperature)
        for weight in lambdas:
            fused = fused_matrix(space, knn, weight)
            best = fused.argmax(axis=1)
            settings.append({"weight_knn": float(weight), "k": int(k), "temperature": float(temperature)})
            hits.append((best == space.truth) & (fused.max(axis=1) > 0))
    return settings, np.array(hits)


def _preference(setting: dict[str, float], top1: float) -> tuple[float, float, float, float]:
    """The most accurate; among equals the one closest to an even mix, with the fewest neighbours."""
    return (round(top1, 12), -abs(setting["weight_knn"] - 0.5), -setting["k"], setting["temperature"])


def best_of(settings: list[dict[str, float]], hits: np.ndarray, rows: np.ndarray) -> int:
    scores = hits[:, rows].mean(axis=1) if len(rows) else np.zeros(len(settings))
    return max(range(len(settings)), key=lambda s: _preference(settings[s], float(scores[s])))


def cross_validated(settings: list[dict[str, float]], hits: np.ndarray, rows: np.ndarray, seed: int) -> float:
    """5-fold estimate of the top-1 that choosing the setting on the tuning split gives: choose on four folds,
    score on the fifth."""
    folds = np.array_split(np.random.default_rng(seed).permutation(rows), min(FOLDS, len(rows)))
    scores = []
    for i, held in enumerate(folds):
        rest = np.concatenate([f for j, f in enumerate(folds) if j != i])
        scores.append(float(hits[best_of(settings, hits, rest), held].mean()))
    return float(np.mean(scores))


def split_queries(labels: Sequence[str], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tuning, calibration and test rows, stratified by species."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for label in sorted(set(labels)):
        rows = rng.permutation([i for i, query in enumerate(labels) if query == label])
        cuts = np.round(np.cumsum(SPLITS)[:-1] * len(rows)).astype(int)
        for part, chunk in zip(parts, np.split(rows, cuts), strict=True):
            part.extend(int(r) for r in chunk)
    return tuple(np.array(sorted(p), dtype=int) for p in parts)  # type: ignore[return-value]


# ---- decisions as the service makes them ----------------------------------------------------------------------
@dataclass
class Decided:
    """Per query of a split, through identify.fusion: top-1 fused and calibrated scores, right or not, the
    decision, whether only the threshold stood in the way, and the roll-up."""

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


def decide_rows(data: EvaluationData, hood: Neighbourhood, rows: np.ndarray, config: FusionConfig,
                calibration: Calibration, prior: PriorModel | None = None) -> Decided:
    """Each query answered by identify.scoring.answer, the service's own decision function, with its place when
    a prior is given."""
    names = SpeciesNames(data.classes, data.taxa)
    anywhere = replace(config, confident_score=0.0)
    answers, eligible, rollup_correct = [], [], []
    for row in rows:
        neighbours = _neighbours(data, hood, row, config.k)
        place = data.query_places[row] if prior is not None and data.query_places is not None else None
        decided = answer(data.probabilities[row], neighbours, names, config, calibration, prior, place)
        answers.append(decided)
        # confident at a threshold of 0: nothing but the score stood in the way (what the threshold controls);
        # the ranking does not depend on the threshold, so only the decision is made again
        eligible.append(decide(decided.ranking, decided.votes, anywhere).decision == CONFIDENT)
        rolled, truth = decided.rollup, data.taxa.get(data.query_labels[row])
        rollup_correct.append(bool(rolled and truth and getattr(truth, rolled.rank) == rolled.scientific_name))
    tops = [a.top for a in answers]
    return Decided(
        rows, np.array([t.fused if t and t.fused is not None else (t.score if t else 0.0) for t in tops]),
        np.array([t.score if t else 0.0 for t in tops]),
        np.array([t is not None and t.name == data.query_labels[row] for t, row in zip(tops, rows, strict=True)],
                 dtype=bool),
        [str(a.decision.decision) for a in answers], np.array(eligible, dtype=bool),
        [a.rollup.scientific_name if a.rollup else None for a in answers],
        [a.rollup.rank if a.rollup else None for a in answers], np.array(rollup_correct, dtype=bool), answers)


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
class Evaluation:
    kind: str
    description: str
    queries: int
    references: int
    config: FusionConfig  # the settings the decisions below were made with (chosen, when held out)
    calibration: Calibration
    held_out: bool  # False: too few queries to split; everything measured on all of them
    split: dict[str, int]
    accuracy: dict[str, dict[str, float]]  # method -> {"top1", "top5"}
    ece: dict[str, float]
    reliability: dict[str, list[dict[str, float]]]  # "before" / "after" calibration
    curve: dict[str, Any]
    decisions: dict[str, float]  # shares of confident / needs_review / no_match, error among confident
    selective: dict[str, Any]
    prior: dict[str, Any]
    views: dict[str, Any]
    new_species: dict[str, Any]
    known_species: dict[str, Any]
    rollup: dict[str, Any]
    ablation: list[dict[str, Any]]
    calibration_block: dict[str, Any] = field(default_factory=dict)
    sweep: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    answers: list[dict[str, Any]] = field(default_factory=list)  # one per test query: queries.csv

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "description": self.description, "queries": self.queries,
            "references": self.references, "held_out": self.held_out, "split": self.split,
            "config": {"weight_knn": self.config.weight_knn, "k": self.config.k, "temperature": self.config.temperature,
                       "confident_score": self.config.confident_score},
            "accuracy": self.accuracy, "ece": self.ece, "calibration": self.calibration_block,
            "selective": self.selective, "prior": self.prior, "views": self.views,
            "new_species": self.new_species, "known_species": self.known_species,
            "rollup": self.rollup,
            "ablation": self.ablation, "decisions": self.decisions, "reliability": self.reliability,
            "coverage_risk": self.curve, "sweep": self.sweep, "best": self.best,
        }


CALIBRATIONS = ("confidence", "temperature", "isotonic", "none")


def fit_calibration(method: str, data: EvaluationData, hood: Neighbourhood, space: LabelSpace, fused: np.ndarray,
                    rows: np.ndarray, config: FusionConfig) -> Calibration:
    """The calibrator of `method`, fitted on these rows (the tuning split)."""
    truth = space.truth[rows]
    if method == "none" or len(rows) == 0:
        return Calibration()
    if method == "isotonic":
        return fit_isotonic(fused[rows].max(axis=1), fused[rows].argmax(axis=1) == truth)
    if method == "confidence":
        return fit_confidence(*evidence_features(data, hood, rows, config))
    return fit_temperature(fused[rows], truth)


def _selective_for(scores_cal: np.ndarray, correct_cal: np.ndarray, scores_test: np.ndarray,
                   correct_test: np.ndarray, config: FusionConfig) -> dict[str, float]:
    """A pure score threshold chosen like the service's on the calibration split, measured on the test split
    (the ablation's rows for the classifier and the neighbours alone)."""
    control = choose_threshold(scores_cal, correct_cal, np.ones(len(scores_cal), dtype=bool), config.target_error,
                               config.risk_confidence)
    confident = scores_test >= control.threshold
    return {"threshold": control.threshold, "coverage": _share(confident),
            "realised_error": _error_among(confident, correct_test)}


def evaluate(data: EvaluationData, config: FusionConfig, run_sweep: bool = True, calibration_method: str = "confidence",
             seed: int = 0) -> Evaluation:
    """Every number of the report (see the module for which split each comes from)."""
    data, _ = in_label_space(data)
    ks = tuple(k for k in KS if k <= len(data.reference_labels)) or (len(data.reference_labels),)
    hood = neighbourhood(data, max(max(ks), config.k, 10))
    space = LabelSpace.of(data)
    everything = np.arange(len(data.query_labels))
    held_out = len(everything) >= MIN_HELD_OUT
    tune, cal, test = split_queries(data.query_labels, seed) if held_out else (everything, everything, everything)

    settings, hits = sweep_hits(space, hood, ks=ks) if run_sweep else ([], np.empty((0, len(everything))))
    sweep = [{**s, "top1": float(hits[i, tune].mean())} for i, s in enumerate(settings)]
    best = {}
    if run_sweep:
        chosen = best_of(settings, hits, tune)
        best = {**settings[chosen], "top1": float(hits[chosen, tune].mean())}
        if held_out:
            best["cv_top1"] = cross_validated(settings, hits, tune, seed)
            config = config.replace(**{key: settings[chosen][key] for key in ("weight_knn", "k", "temperature")})

    knn = knn_matrix(space, hood, config.k, config.temperature)
    fused = fused_matrix(space, knn, config.weight_knn)
    calibration = fit_calibration(calibration_method if held_out else "none", data, hood, space, fused, tune, config)
    on_cal = decide_rows(data, hood, cal, config, calibration)
    control = choose_threshold(on_cal.top, on_cal.correct, on_cal.eligible, config.target_error, config.risk_confidence)
    if held_out:
        config = config.replace(confident_score=control.threshold)
    tested = decide_rows(data, hood, test, config, calibration)

    truth = space.truth[test]
    accuracy = {name: {"top1": top_k_accuracy(scores[test], truth, 1), "top5": top_k_accuracy(scores[test], truth, 5)}
                for name, scores in (("classifier", space.clf), ("knn", knn))}
    accuracy["fusion"] = served_accuracy(data, tested)  # the answers as served: fused, calibrated
    ece_before, bins_before = expected_calibration_error(tested.fused_top, tested.correct)
    ece_after, bins_after = expected_calibration_error(tested.top, tested.correct)
    classifier_ece, _ = expected_calibration_error(space.clf[test].max(axis=1), space.clf[test].argmax(axis=1) == truth)
    confident = np.array([d == CONFIDENT for d in tested.decisions], dtype=bool)
    share = {str(d): _share(np.array([x == d for x in tested.decisions])) for d in (CONFIDENT, NEEDS_REVIEW, NO_MATCH)}
    realised = _error_among(confident, tested.correct)
    result = Evaluation(
        kind=data.kind, description=data.description, queries=len(everything), references=len(data.reference_labels),
        config=config, calibration=calibration, held_out=held_out,
        split={"tuning": len(tune), "calibration": len(cal), "test": len(test)},
        accuracy=accuracy, ece={"fusion": ece_before, "calibrated": ece_after, "classifier": classifier_ece},
        reliability={"before": bins_before, "after": bins_after}, curve=coverage_risk(tested.top, tested.correct),
        decisions={**share, "review_rate": share[NEEDS_REVIEW] + share[NO_MATCH], "error_when_confident": realised},
        selective={**control.to_dict(), "coverage": _share(confident), "realised_error": realised},
        prior=_prior_block(data, hood, test, config, calibration, tested),
        views=_views_block(data, test, config, calibration),
        new_species=_new_species(data, space, hood, tested, confident),
        known_species=_known_species(space, tested, confident),
        rollup=_rollup_block(tested, confident),
        ablation=[],
        calibration_block={"method": calibration.method, "temperature": calibration.temperature,
                           "ece_before": ece_before, "ece_after": ece_after, "fitted_on": "tuning split"},
        sweep=sweep, best=best, answers=answer_rows(data, tested),
    )
    result.ablation = _ablation(data, space, hood, knn, fused, tune, cal, test, config, tested, confident, result)
    return result


def _prior_model(records: list[tuple[str, float, float, Any]]) -> PriorModel:
    model = PriorModel(())
    model.add_records(records)
    return model


def _prior_block(data: EvaluationData, hood: Neighbourhood, test: np.ndarray, config: FusionConfig,
                 calibration: Calibration, without: Decided) -> dict[str, Any]:
    """Top-1 on the test split with the place-and-season prior, without it, and with an uninformative prior
    (records spread evenly), which should change nearly nothing."""
    if data.query_places is None or not data.occurrences:
        return {"measured": False}
    placed = decide_rows(data, hood, test, config, calibration, _prior_model(data.occurrences))
    flat = decide_rows(data, hood, test, config, calibration, _prior_model(data.uninformative_occurrences or []))
    return {"measured": True, "top1_without": _share(without.correct), "top1_with": _share(placed.correct),
            "top1_uninformative": _share(flat.correct),
            "uninformative_change_points": round(100 * abs(_share(flat.correct) - _share(without.correct)), 2)}


def _views_block(data: EvaluationData, test: np.ndarray, config: FusionConfig,
                 calibration: Calibration) -> dict[str, Any]:
    """Top-1 from one photo of each queried bird against all its photos pooled (identify.identifier), each
    answered as the service answers a sighting."""
    from identify.identifier import Evidence, NeighbourInfo, pool_evidence

    if data.view_embeddings is None or data.view_probabilities is None:
        return {"measured": False}
    views = 1 + data.view_embeddings.shape[1]
    embeddings = np.concatenate([data.query_embeddings[test][:, None, :], data.view_embeddings[test]], axis=1)
    probabilities = np.concatenate([data.probabilities[test][:, None, :], data.view_probabilities[test]], axis=1)
    similarities, positions = exact_knn(embeddings.reshape(-1, embeddings.shape[-1]), data.reference_embeddings, config.k)
    names = SpeciesNames(data.classes, data.taxa)
    single = pooled = 0
    for q, row in enumerate(test):
        evidence = []
        for v in range(views):
            flat = q * views + v
            neighbours = [NeighbourInfo(int(i), data.reference_labels[i], float(s), "", "")
                          for s, i in zip(similarities[flat], positions[flat], strict=True)]
            evidence.append(Evidence(probabilities[q, v], embeddings[q, v], neighbours, 0.0))
        for pool, bucket in (([evidence[0]], "single"), (evidence, "pooled")):
            merged = pool_evidence(pool)
            votes = [Neighbour(n.reference_id, n.species, n.similarity) for n in merged.neighbours]
            top = answer(merged.probabilities, votes, names, config, calibration).top
            right = top is not None and top.name == data.query_labels[row]
            single, pooled = (single + right, pooled) if bucket == "single" else (single, pooled + right)
    return {"measured": True, "views": views, "top1_one_photo": single / len(test), "top1_pooled": pooled / len(test)}


def _new_species(data: EvaluationData, space: LabelSpace, hood: Neighbourhood, tested: Decided,
                 confident: np.ndarray) -> dict[str, Any]:
    """Queries whose species the classifier does not know (only references do)."""
    truth = space.truth[tested.rows]
    new = np.array([t >= 0 and not space.is_class[t] for t in truth], dtype=bool)
    own_close = np.array([int((space.reference_column[hood.reference_index[row, :10]] == t).sum())
                          for row, t in zip(tested.rows, truth, strict=True)])
    close = new & (own_close >= CLOSE_REFERENCES)
    right_and_sure = confident & tested.correct
    return {"queries": int(new.sum()), "top1": _share(tested.correct[new]), "confident_share": _share(confident[new]),
            "confident_error": _error_among(confident[new], tested.correct[new]),
            "with_close_references": int(close.sum()),
            "close_confident_and_correct": _share(right_and_sure[close])}


def _known_species(space: LabelSpace, tested: Decided, confident: np.ndarray) -> dict[str, Any]:
    """Queries whose species is one of the classifier's classes: the counterpart of the new-species block."""
    truth = space.truth[tested.rows]
    known = np.array([t >= 0 and bool(space.is_class[t]) for t in truth], dtype=bool)
    return {"queries": int(known.sum()), "top1": _share(tested.correct[known]),
            "confident_share": _share(confident[known]),
            "confident_error": _error_among(confident[known], tested.correct[known])}


def _rollup_block(tested: Decided, confident: np.ndarray) -> dict[str, Any]:
    uncertain = ~confident
    rolled = np.array([t is not None for t in tested.rollup_taxa], dtype=bool)
    ranks = [rank for rank, taxon in zip(tested.rollup_ranks, tested.rollup_taxa, strict=True) if taxon is not None]
    return {"uncertain": int(uncertain.sum()), "rolled_up_share": _share(rolled[uncertain]),
            "correct_share": _share(tested.rollup_correct[uncertain & rolled]),
            "by_rank": {rank: ranks.count(rank) for rank in ("genus", "family", "order")},
            "species_already_right": _share(tested.correct[uncertain & rolled])}


def _ablation(data: EvaluationData, space: LabelSpace, hood: Neighbourhood, knn: np.ndarray, fused: np.ndarray,
              tune: np.ndarray, cal: np.ndarray, test: np.ndarray, config: FusionConfig, tested: Decided,
              confident: np.ndarray, result: Evaluation) -> list[dict[str, Any]]:
    """Each part added in turn, on the test split. Every row's threshold is chosen on the calibration split the
    same way (target error, stated confidence); `useful` is the share of queries answered with a confident right
    species, plus, for the roll-up, those given a right genus, family or order instead."""
    rows = []
    for name, scores in (("classifier", space.clf), ("kNN", knn), ("fusion", fused)):
        right_cal = scores[cal].argmax(axis=1) == space.truth[cal]
        right_test = scores[test].argmax(axis=1) == space.truth[test]
        ece, _ = expected_calibration_error(scores[test].max(axis=1), right_test)
        selective = _selective_for(scores[cal].max(axis=1), right_cal, scores[test].max(axis=1), right_test, config)
        rows.append({"method": name, "top1": top_k_accuracy(scores[test], space.truth[test], 1), "ece": ece,
                     **selective, "useful": selective["coverage"] * (1 - selective["realised_error"])})
    if result.held_out and result.calibration.method != "temperature":  # the reference calibrator, beside
        rows.append(_calibrated_row("+ temperature scaling", data, hood, space, fused, tune, cal, test, config))
    right_confident = _share(confident & tested.correct)
    rows.append({"method": f"+ calibration ({result.calibration.method})", "top1": result.accuracy["fusion"]["top1"],
                 "ece": result.ece["calibrated"], "threshold": config.confident_score,
                 "coverage": result.selective["coverage"], "realised_error": result.selective["realised_error"],
                 "useful": right_confident})
    rolled_right = _share(~confident & tested.rollup_correct)
    rows.append({**rows[-1], "method": "+ roll-up", "useful": right_confident + rolled_right})
    return rows


def _calibrated_row(name: str, data: EvaluationData, hood: Neighbourhood, space: LabelSpace, fused: np.ndarray,
                    tune: np.ndarray, cal: np.ndarray, test: np.ndarray, config: FusionConfig) -> dict[str, Any]:
    calibration = fit_calibration("temperature", data, hood, space, fused, tune, config)
    on_cal = decide_rows(data, hood, cal, config, calibration)
    control = choose_threshold(on_cal.top, on_cal.correct, on_cal.eligible, config.target_error, config.risk_confidence)
    tested = decide_rows(data, hood, test, config.replace(confident_score=control.threshold), calibration)
    confident = np.array([d == CONFIDENT for d in tested.decisions], dtype=bool)
    ece, _ = expected_calibration_error(tested.top, tested.correct)
    return {"method": name, "top1": _share(tested.correct), "ece": ece, "threshold": control.threshold,
            "coverage": _share(confident), "realised_error": _error_among(confident, tested.correct),
            "useful": _share(confident & tested.correct)}


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
                "upper_bound": self.upper_bound, "within_target": self.within_target, "groups": self.groups}


def _checked_figures(correct: np.ndarray, confident: np.ndarray, confidence: float) -> dict[str, Any]:
    errors = int((confident & ~correct).sum())
    return {"queries": int(len(correct)), "top1": _share(correct), "coverage": _share(confident),
            "confident": int(confident.sum()), "errors": errors, "realised_error": _error_among(confident, correct),
            "upper_bound": clopper_pearson_upper(errors, int(confident.sum()), confidence)}


def check(data: EvaluationData, config: FusionConfig, calibration: Calibration) -> Check:
    """`config` and `calibration` (what a deployment serves) measured on every query of `data` as they are:
    realised error among confident answers with its upper bound, coverage and top-1, overall and per group.
    Run it after the references change, on new labelled photos, to learn whether a stored threshold still holds."""
    data, _ = in_label_space(data)
    hood = neighbourhood(data, max(config.k, 1))
    everything = np.arange(len(data.query_labels))
    decided = decide_rows(data, hood, everything, config, calibration)
    confident = np.array([d == CONFIDENT for d in decided.decisions], dtype=bool)
    groups = np.array([query_group(data, data.query_labels[row]) for row in everything])
    overall = _checked_figures(decided.correct, confident, config.risk_confidence)
    per_group = {name: _checked_figures(decided.correct[groups == name], confident[groups == name],
                                        config.risk_confidence)
                 for name in ("known", "new") if (groups == name).any()}
    return Check(data.kind, data.description, len(everything), config, calibration, overall["top1"],
                 overall["coverage"], overall["confident"], overall["errors"], overall["realised_error"],
                 overall["upper_bound"], per_group, answer_rows(data, decided))
