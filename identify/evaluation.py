"""Quality on labelled queries, measured the way the service decides: the classifier alone, the neighbours alone,
their (open-set) fusion, calibration, the risk-controlled `confident` threshold and the roll-up.

Nothing is reported on the data it was chosen or fitted on. The queries are split, stratified by species, into
- a tuning split: lambda, k and T are chosen there (with a 5-fold cross-validation estimate of how good the
  choice is), and the calibrator is fitted there;
- a calibration split: the `confident` threshold is chosen there (identify.calibration: Learn-then-Test with
  Clopper–Pearson bounds), for the decision exactly as identify.fusion makes it;
- a test split: every figure of the report.
With too few queries to split (fewer groups than identify.splits.FOLDS), everything is measured on all of them at the given
settings, and the report says so.

The answers and the metrics are identify.measurement's; this module chooses, fits and holds out. Works on
arrays (probabilities, embeddings, labels), so the same code measures a real model on photos and the
seeded simulation. Everything is measured in the service's label space (identify.scoring.SpeciesNames: labels of
one taxon are one species, named by the label that stands for it). The sweep is vectorised; every reported
decision, the calibrator's fit and the threshold's choice go query by query through identify.scoring.answer,
the function that answers uploads and `predict`."""

from __future__ import annotations

from datetime import datetime, timezone
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from identify.calibration import (Calibration, FittedOn, RiskControl, choose_threshold, fit_confidence, fit_isotonic,
                                  fit_temperature)
from identify.conditions import conditions
from identify.config import FusionConfig
from identify.fusion import CONFIDENT, NEEDS_REVIEW, NO_MATCH, Neighbour
from identify.measurement import (
    Decided,
    EvaluationData,
    LabelSpace,
    Neighbourhood,
    _error_among,
    _share,
    answer_rows,
    coverage_risk,
    decide_rows,
    evidence_features,
    expected_calibration_error,
    fused_matrix,
    in_label_space,
    knn_matrix,
    neighbourhood,
    prior_of,
    served_accuracy,
    served_prior,
    top_k_accuracy,
)
from identify.prior import PriorModel
from identify.risk import (confident_under, group_controls, group_report, leave_one_species_out, open_set_answers,
                           open_set_block, open_set_species, rank_controls, rank_open_set,
                           wider_open_set, with_group_thresholds, left_out_answers)
from identify.scoring import PLACED, SpeciesNames, answer
from identify.splits import query_groups, separable, split_queries
from identify.tuning import (KS, NO_MATCH_RIGHT_AT_MOST, best_of, choose_no_match, choose_open_set_rules, cross_validated,
                            no_match_share, sweep_hits)
from identify.vectors.plan import exact_knn

CLOSE_REFERENCES = 5  # "a new species with five or more close references": of its own among the 10 nearest


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
    no_match: dict[str, Any]  # the no_match thresholds, how they were chosen, what they said on the test split
    open_set_rules: dict[str, Any]  # the open-set rules, chosen by leave-one-species-out (identify.tuning)
    selective: dict[str, Any]
    prior: dict[str, Any]
    views: dict[str, Any]
    new_species: dict[str, Any]
    known_species: dict[str, Any]
    open_set: dict[str, Any]
    rollup: dict[str, Any]
    ablation: list[dict[str, Any]]
    conditions: dict[str, dict[str, Any]]  # photo_alone, with_place (identify.conditions)
    calibration_block: dict[str, Any] = field(default_factory=dict)
    sweep: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    answers: list[dict[str, Any]] = field(default_factory=list)  # one per test query: queries.csv
    shift: dict[str, Any] = field(default_factory=dict)  # the simulation's: identify.shift (empty: not measured)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "description": self.description, "queries": self.queries,
            "references": self.references, "held_out": self.held_out, "split": self.split,
            **self.conditions,
            "config": {"weight_knn": self.config.weight_knn, "k": self.config.k, "temperature": self.config.temperature,
                       "confident_score": self.config.confident_score},
            "accuracy": self.accuracy, "ece": self.ece, "calibration": self.calibration_block,
            "selective": self.selective, "prior": self.prior, "views": self.views,
            "new_species": self.new_species, "known_species": self.known_species, "open_set": self.open_set,
            "rollup": self.rollup,
            "ablation": self.ablation, "decisions": self.decisions, "no_match": self.no_match,
            "open_set_rules": self.open_set_rules, "reliability": self.reliability,
            "coverage_risk": self.curve, "sweep": self.sweep, "best": self.best,
            **({"shift": self.shift} if self.shift else {}),
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
             seed: int = 0, choose_rules: bool = True) -> Evaluation:
    """Every number of the report (see the module for which split each comes from); `choose_rules` False keeps
    the open-set rules as given (to measure what choosing them does)."""
    data, _ = in_label_space(data)
    # A k under min_support can never back an answer with enough distinct references: on near-copies (the demo's
    # photos) k = 1 has the best top-1, and with it nothing at all could be confident.
    ks = tuple(k for k in KS if config.min_support <= k <= len(data.reference_labels)) or \
        (len(data.reference_labels),)
    hood = neighbourhood(data, max(max(ks), config.k, 10))
    space = LabelSpace.of(data)
    everything = np.arange(len(data.query_labels))
    groups, grouping = query_groups(data.query_embeddings, data.query_groups, config.same_photo_similarity)
    held_out = separable(groups)
    tune, cal, test = (split_queries(data.query_labels, seed, groups) if held_out
                       else (everything, everything, everything))

    settings, hits = sweep_hits(space, hood, ks=ks) if run_sweep else ([], np.empty((0, len(everything))))
    sweep = [{**s, "top1": float(hits[i, tune].mean())} for i, s in enumerate(settings)]
    best = {}
    if run_sweep:
        chosen = best_of(settings, hits, tune)
        best = {**settings[chosen], "top1": float(hits[chosen, tune].mean())}
        if held_out:
            best["cv_top1"] = cross_validated(settings, hits, tune, seed)
            config = config.replace(**{key: settings[chosen][key] for key in ("weight_knn", "k", "temperature")})
    defaults = (config.no_match_similarity, config.no_match_classifier)
    if held_out:  # chosen with the prior in place where the service would apply it, as the threshold is
        never = config.replace(no_match_similarity=-1.0)
        withheld = open_set_species(data, tune, seed + 1, exclude=frozenset(open_set_species(data, test, seed)))
        similarity, classifier = choose_no_match(
            defaults, config.risk_confidence,
            decide_rows(data, hood, tune, never, Calibration(), served_prior(data)),
            open_set_answers(data, tune, withheld, never, Calibration(), served_prior(data)))
        config = config.replace(no_match_similarity=similarity, no_match_classifier=classifier)

    knn = knn_matrix(space, hood, config.k, config.temperature)
    fused = fused_matrix(space, knn, config.weight_knn)
    calibration = fit_calibration(calibration_method if held_out else "none", data, hood, space, fused, tune, config)
    left_out = leave_one_species_out(data, config, calibration) if held_out else []
    rules: dict[str, Any] = {"chosen_on": "given: too few queries to hold any out" if not held_out else "given"}
    if held_out and choose_rules:  # on the photo alone, before the thresholds: they are chosen for the decision with these rules
        config, rules = choose_open_set_rules(config, data, decide_rows(data, hood, tune, config, calibration),
                                              left_out)
    # The thresholds are chosen as the service will decide: with the prior in place where queries have a place
    # and occurrences are known (with it, a threshold chosen without it lost coverage and bound nothing).
    # Answers with and without a place are other scores: each kind gets its own thresholds (identify.risk).
    prior = served_prior(data)
    on_cal = decide_rows(data, hood, cal, config, calibration)
    control = choose_threshold(on_cal.top, on_cal.correct, on_cal.eligible, config.target_error, config.risk_confidence)
    controls = group_controls(on_cal, config) if held_out else {}
    on_place = decide_rows(data, hood, cal, config, calibration, prior) if held_out and prior is not None else None
    if on_place is not None:  # the answers with a place get their own; those without keep the above
        controls |= {group: c for group, c in group_controls(on_place, config).items() if group.endswith(PLACED)}
    # the left-out species' photos under the rules and thresholds as chosen (for the ranks, and the report)
    left = left_out_answers(left_out, config, controls, control.threshold)
    if held_out:  # then each rank's, on the answers the species' thresholds leave (identify.risk.rank_controls)
        controls |= rank_controls(on_cal, confident_under(on_cal, controls, control.threshold), config,
                                  open_set=rank_open_set(left, wider_open_set(data, config, calibration)))
    if held_out:
        config = config.replace(confident_score=control.threshold)
        calibration = replace(with_group_thresholds(calibration, controls), target_error=config.target_error,
                              fitted_on=FittedOn.of_counts(Counter(data.reference_labels), prior is not None),
                              fitted_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    tested = decide_rows(data, hood, test, config, calibration, prior)
    if left_out and "photos" in rules:  # the left-out species' photos under the thresholds as chosen
        leaked = sum(int(confident.sum()) for _, confident in left)
        rules |= {"served_confident": leaked, "served_confident_share": leaked / rules["photos"]}

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
        split={"tuning": len(tune), "calibration": len(cal), "test": len(test), **grouping},
        accuracy=accuracy, ece={"fusion": ece_before, "calibrated": ece_after, "classifier": classifier_ece},
        reliability={"before": bins_before, "after": bins_after}, curve=coverage_risk(tested.top, tested.correct),
        decisions={**share, "review_rate": share[NEEDS_REVIEW] + share[NO_MATCH], "error_when_confident": realised,
                   "confident_at_higher_rank": _share(tested.rollup_certified)},
        no_match=_no_match_block(tested, config, defaults, held_out),
        open_set_rules=rules,
        selective={**control.to_dict(), "coverage": _share(confident), "realised_error": realised,
                   "groups": group_report(data, tested, config, calibration, controls)},
        prior=_prior_block(data, hood, test, config, calibration, tested, prior, controls),
        open_set=open_set_block(data, test, config, calibration, seed, prior),
        conditions=conditions(data, hood, test, config, calibration, seed, prior),
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


def _no_match_block(tested: Decided, config: FusionConfig, defaults: tuple[float, float],
                    held_out: bool) -> dict[str, Any]:
    """The no_match thresholds and, on the test split, how often it is said and how often its top-1 was right
    anyway, beside what the thresholds given to evaluate would have said."""
    chosen = (config.no_match_similarity, config.no_match_classifier)
    return {"similarity": chosen[0], "classifier": chosen[1], "chosen_on": "tuning split" if held_out else "given",
            "right_at_most": NO_MATCH_RIGHT_AT_MOST, "test": no_match_share(tested, *chosen),
            "given": {"similarity": defaults[0], "classifier": defaults[1], "test": no_match_share(tested, *defaults)}}


def _prior_block(data: EvaluationData, hood: Neighbourhood, test: np.ndarray, config: FusionConfig,
                 calibration: Calibration, placed: Decided, prior: PriorModel | None,
                 controls: dict[str, RiskControl]) -> dict[str, Any]:
    """The test split as served (the prior in place, the thresholds chosen with it) against the same
    thresholds without the prior and with an uninformative prior (records spread evenly), which should change
    nearly nothing: top-1, and coverage and error among confident answers of each."""
    if prior is None:
        return {"measured": False}
    without = decide_rows(data, hood, test, config, calibration)
    flat = decide_rows(data, hood, test, config, calibration, prior_of(data.uninformative_occurrences or []))
    block: dict[str, Any] = {"measured": True, "thresholds_chosen_with_prior": True}
    for name, decided in (("with", placed), ("without", without), ("uninformative", flat)):
        confident = np.array([d == CONFIDENT for d in decided.decisions], dtype=bool)
        block |= {f"top1_{name}": _share(decided.correct), f"coverage_{name}": _share(confident),
                  f"error_{name}": _error_among(confident, decided.correct)}
    block["uninformative_change_points"] = round(100 * abs(block["top1_uninformative"] - block["top1_without"]), 2)
    block["groups_without"] = group_report(data, without, config, calibration, controls)
    return block


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
            top = answer(merged.probabilities, votes, names, config, calibration,
                         reference_counts=dict(Counter(data.reference_labels))).top
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
