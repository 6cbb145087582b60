"""Re-certification: the `confident` thresholds and the open-set rules fitted again from the labelled data a
deployment holds, so that the bound follows the references instead of describing a gallery that has moved.

The labelled data are the references themselves (each with the classifier's output from the forward pass that
embedded it, and the individual or source it belongs to) and, where given, reviewed sightings (the data's
queries: answered against every reference, on the photo alone, and with their place where they have one, which
certifies the `+place` thresholds):
- every reference is answered, on the photo alone, against the references **without its own individual**
  (leave-group-out: its own bird's other photos would be near-copies no upload has); a reference without a
  declared individual is joined with its near-duplicates (identify.splits.query_groups);
- every species' references are answered against the references **without that species**
  (leave-one-species-out: the open set, identify.risk.leave_one_species_out).
The calibrator, λ, k, T and `no_match` stay as `evaluate` fitted them on its own queries (so every reference
can certify: nothing else is fitted on them). The thresholds, pooled and per group, are chosen on the
references' leave-individual-out answers by Learn-then-Test (identify.calibration.choose_threshold,
identify.risk.group_controls; then each rank's, identify.risk.rank_controls), and the open-set share is measured on the left-out species under them; where it
is over the target the rules are chosen again (identify.tuning) on some of the individuals and the thresholds
certified on the others. Pure: arrays in, a Certification out; the job that runs it owns the SQL."""

from __future__ import annotations

import functools
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np

from identify.calibration import (NOTHING_CONFIDENT, Calibration, FittedOn, RiskControl, choose_threshold,
                                  clopper_pearson_upper)
from identify.config import CERTIFIED_SETTINGS, FusionConfig
from identify.measurement import (Decided, EvaluationData, Neighbourhood, decide_rows, in_label_space, neighbourhood,
                                  served_prior)
from identify.risk import (confident_under, group_controls, leave_one_species_out, left_out_answers, rank_controls,
                           rank_open_set, wider_open_set, with_group_thresholds)
from identify.scoring import PLACED, SPECIES_GROUP
from identify.splits import query_groups
from identify.tuning import choose_open_set_rules, thresholds_on
from identify.vectors.plan import exact_knn

FIT_SHARE = 0.4  # of the individuals, to choose the open-set rules on when they must be chosen again
MIN_GROUPS = 4  # individuals a certification needs at least (two on each side, and more to mean anything)


@dataclass(frozen=True)
class Certification:
    """What re-certification decided: the settings and calibration to serve, and what they rest on."""

    config: FusionConfig  # the given one with the open-set rules and the pooled threshold chosen
    calibration: Calibration  # its thresholds per group, target, fitted_on and fitted_at
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"config": {key: getattr(self.config, key)
                           for key in (*CERTIFIED_SETTINGS, "target_error", "risk_confidence")},
                "calibration": self.calibration.to_dict(), "figures": self.figures}


def kept_output(data: EvaluationData) -> np.ndarray:
    """Which references kept the classifier's output (NaN: recorded before outputs were kept)."""
    assert data.reference_probabilities is not None
    return np.isfinite(data.reference_probabilities).all(axis=1)


def reference_groups(data: EvaluationData, same_photo_similarity: float) -> np.ndarray:
    """The individual of each reference: its declared one, joined with its near-duplicates."""
    groups, _ = query_groups(data.reference_embeddings, data.reference_groups, same_photo_similarity)
    return groups


def leave_group_out(data: EvaluationData, groups: np.ndarray, k: int) -> tuple[EvaluationData, Neighbourhood]:
    """The references as queries (their classifier outputs beside them), each searched against the references
    of other individuals: the data and neighbourhood identify.measurement.decide_rows answers."""
    assert data.reference_probabilities is not None
    largest = int(np.bincount(groups).max()) if len(groups) else 0
    k = max(1, min(k, len(groups) - largest))  # every reference has this many of other individuals
    similarities, positions = exact_knn(data.reference_embeddings, data.reference_embeddings, min(len(groups), k + largest))
    kept_similarities = np.full((len(groups), k), -1.0, dtype=np.float32)
    kept_positions = np.zeros((len(groups), k), dtype=np.int64)
    for row in range(len(groups)):
        other = groups[positions[row]] != groups[row]
        take = positions[row][other][:k]
        kept_positions[row, :len(take)] = take
        kept_similarities[row, :len(take)] = similarities[row][other][:k]
    asked = replace(data, query_embeddings=data.reference_embeddings, probabilities=data.reference_probabilities,
                    query_labels=list(data.reference_labels), query_places=None, query_paths=None,
                    query_groups=[str(g) for g in groups], view_embeddings=None, view_probabilities=None)
    return asked, Neighbourhood(kept_similarities, kept_positions)


def _halves(groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of whole individuals: FIT_SHARE of them, drawn at random, and the rest."""
    chosen = np.random.default_rng(seed).permutation(np.unique(groups))
    fit = set(chosen[:max(2, round(FIT_SHARE * len(chosen)))].tolist())
    mask = np.array([g in fit for g in groups], dtype=bool)
    rows = np.arange(len(groups))
    return rows[mask], rows[~mask]


def open_set_share(left: list[tuple[Decided, np.ndarray]], config: FusionConfig) -> tuple[int, int, float]:
    """(left-out photos confident, left-out photos, the Clopper-Pearson upper bound on the share), from the
    left-out species' answers under the rules and thresholds (identify.risk.left_out_answers)."""
    leaked = sum(int(confident.sum()) for _, confident in left)
    photos = sum(len(decided.rows) for decided, _ in left)
    return leaked, photos, clopper_pearson_upper(leaked, photos, config.risk_confidence)


def certify(data: EvaluationData, config: FusionConfig, calibration: Calibration, seed: int = 0) -> Certification:
    """Thresholds (and, where the given ones no longer bound the open set, open-set rules) for `data`'s
    references, with `config`'s λ, k, T and `calibration`'s calibrator as `evaluate` fitted them (see the
    module): every reference answered by leave-individual-out certifies the thresholds; when the given rules let
    more than the target of the left-out species' photos be confident under them, the rules are chosen again
    on FIT_SHARE of the individuals and the thresholds certified on the rest."""
    started = time.perf_counter()
    data, _ = in_label_space(data)
    if data.reference_probabilities is None:
        raise ValueError("re-certification needs the classifier's output on every reference")
    groups = reference_groups(data, config.same_photo_similarity)
    if len(set(groups[kept_output(data)].tolist())) < MIN_GROUPS:
        return _nothing_certified(config, calibration, data, "too few individuals among the references")
    asked, hood = leave_group_out(data, groups, max(config.k, 1))
    left_out = leave_one_species_out(data, config, calibration)
    wider = wider_open_set(data, config, calibration)  # genera and families left out: for the ranks' thresholds
    everything = np.flatnonzero(kept_output(data))  # references recorded without the classifier's output: searched only
    reviewed = np.arange(len(data.query_labels))
    searched = neighbourhood(data, max(config.k, 1)) if len(reviewed) else None

    def thresholds(config: FusionConfig, rows: np.ndarray) -> tuple[dict[str, RiskControl], float,
                                                                   list[tuple[Decided, np.ndarray]]]:
        answered = decide_rows(asked, hood, rows, config, calibration)
        if searched is not None:  # reviewed sightings: on the photo alone with the references, and with a place
            answered = joined(answered, decide_rows(data, searched, reviewed, config, calibration))
        controls, pooled = thresholds_on(answered, config)
        # a new species' own threshold comes from its sequential bound alone (earned), not from one look's
        controls = {g: c for g, c in controls.items()
                    if not (g.startswith(SPECIES_GROUP) and g.removeprefix(SPECIES_GROUP) not in data.classes)}
        controls |= earned(answered, data.classes, config)
        left = left_out_answers(left_out, config, controls, pooled)  # the open set under them, for what follows
        controls |= rank_controls(answered, confident_under(answered, controls, pooled), config,
                                  open_set=rank_open_set(left, wider))
        placed = [row for row in reviewed if data.query_places and data.query_places[row] is not None]
        prior = served_prior(data)
        if placed and prior is not None:
            on_place = decide_rows(data, searched, np.array(placed), config, calibration, prior)  # type: ignore[arg-type]
            controls |= {g: c for g, c in group_controls(on_place, config).items() if g.endswith(PLACED)}
        return controls, pooled, left

    controls, pooled, left = thresholds(config, everything)
    leaked, photos, bound = open_set_share(left, config)
    rules: dict[str, Any] = {"chosen_on": "given", "vouch_vote": config.vouch_vote,
                             "contradicting_vote": config.contradicting_vote}
    certifying = everything
    if bound > config.target_error:  # the given rules no longer hold the open set: choose them again
        fit, certifying = (np.intersect1d(half, everything) for half in _halves(groups, seed))
        config, rules = choose_open_set_rules(config, asked, decide_rows(asked, hood, fit, config, calibration),
                                              left_out)
        controls, pooled, left = thresholds(config, certifying)
        leaked, photos, bound = open_set_share(left, config)
    config = config.replace(confident_score=pooled)
    certified = replace(with_group_thresholds(calibration, controls), target_error=config.target_error,
                        fitted_on=FittedOn.of_counts(Counter(data.reference_labels), False),
                        fitted_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return Certification(config, certified, {
        "references": len(data.reference_labels), "reviewed": int(len(reviewed)), "individuals": int(len(set(groups.tolist()))),
        "certifying": int(len(certifying)), "open_set_rules": rules,
        "open_set": {"photos": photos, "confident": leaked, "upper_bound": bound, "bounded": bound <= config.target_error},
        "pooled": pooled, "groups": _group_figures(controls), "seconds": round(time.perf_counter() - started, 3)})


def earned(answered: Decided, classes: list[str], config: FusionConfig) -> dict[str, RiskControl]:
    """New species (outside the classifier's classes) that have earned confidence, each with its own threshold:
    over the answers naming it that nothing but the score kept from `confident`, the thresholds of the grid are
    tested from the highest down (fixed-sequence, as identify.calibration.choose_threshold) with the
    anytime-valid confidence sequence of identify.audit in place of a one-look bound, since a species is
    certified again at every change (many looks at its growing evidence); the lowest that keeps the upper bound
    at the target is its threshold. One that has not earned any stays under its coarse group's, which holds it
    back while `new` cannot be certified as a whole."""
    from identify.audit import confidence_sequence

    known = set(classes)
    fewest = fewest_for_sequence(config.target_error, config.risk_confidence)
    out = {}
    for species in sorted({a.top.name for a in answered.answers if a.top is not None} - known):
        mine = np.array([a.top is not None and a.top.name == species for a in answered.answers])
        # fewer than `fewest` answered: no bound can pass (the scores alone say so), not in the sequence
        chosen = choose_threshold(answered.top, answered.correct, mine & answered.eligible, config.target_error,
                                  config.risk_confidence, min_answered=fewest,
                                  upper=lambda wrong, count, level: confidence_sequence(wrong, count, level)[1])
        if chosen.threshold < NOTHING_CONFIDENT:
            out[SPECIES_GROUP + species] = chosen
    return out


@functools.lru_cache(maxsize=16)
def fewest_for_sequence(target: float, confidence: float) -> int:
    """The fewest answers, none wrong, whose confidence-sequence upper bound reaches `target` (102 at 5 %, 90 %)."""
    from identify.audit import confidence_sequence

    count = 1
    while confidence_sequence(0, count, confidence)[1] > target:
        count += 1
    return count


def joined(first: Decided, second: Decided) -> Decided:
    """Two sets of answers as one (for choosing thresholds: their rows mean nothing together)."""
    def both(name: str) -> Any:
        return np.concatenate([getattr(first, name), getattr(second, name)])

    return Decided(both("rows"), both("fused_top"), both("top"), both("correct"), first.decisions + second.decisions,
                   both("eligible"), first.rollup_taxa + second.rollup_taxa, first.rollup_ranks + second.rollup_ranks,
                   both("rollup_correct"), first.answers + second.answers, both("rollup_certified"),
                   both("rank_scores"), both("rank_right"))


def _group_figures(controls: dict[str, RiskControl]) -> dict[str, dict[str, Any]]:
    return {group: {"threshold": c.threshold, "answered": c.answered, "errors": c.errors,
                    "upper_bound": c.upper_bound} for group, c in sorted(controls.items())}


def _nothing_certified(config: FusionConfig, calibration: Calibration, data: EvaluationData,
                       why: str) -> Certification:
    """A certification that certifies nothing: every answer held back until there is more to go on."""
    held = replace(calibration, thresholds=(), target_error=config.target_error,
                   fitted_on=FittedOn.of_counts(Counter(data.reference_labels), False),
                   fitted_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return Certification(config.replace(confident_score=NOTHING_CONFIDENT), held, {"nothing_certified": why})
