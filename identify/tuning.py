"""Choosing the fusion's settings on the tuning split: lambda, k and T (a vectorised sweep of the fused top-1),
the `no_match` thresholds, and the open-set rules.

`no_match` says "nothing here looks like it": the nearest reference is far and the classifier unsure. Said of a
query whose top-1 was right, it hides a right answer (with the shipped defaults, about half of the demo model's
`no_match` answers had the right top-1); not said of a bird whose species has no reference, it lets the
look-alike's references answer (the open set). So the thresholds are chosen on both kinds of tuning query: the
tuning split as it is, and the tuning split's queries of a few species whose references are withheld
(identify.risk.open_set_species; other species than the report's open-set block measures). Of the grid's pairs
under which the top-1 is right for at most NO_MATCH_RIGHT_AT_MOST of the queries `no_match` is said of (by the
Clopper-Pearson upper bound at `risk_confidence`: a few lucky tuning queries do not move the rule), the one
saying it of the most; among equals, the one nearest the thresholds evaluate was given (where the tuning
queries cannot tell pairs apart, as when none is far from every reference, the configured rule stands).

The open-set rules (identify.openset: `vouch_vote`, `contradicting_vote`, `spread_quantile`) are chosen by
leave-one-species-out over the references (identify.risk.leave_one_species_out), on the photo alone: for each
setting of the grid the thresholds are chosen on the tuning split as the calibration split will choose them,
and the setting kept is the one answering the most tuning queries `confident` among those under which the
Clopper-Pearson upper bound (at `risk_confidence`) on the share of the left-out species' photos answered
`confident` stays at most `target_error`. Where none does, the one with the lowest bound, and the report says
the open set is not bounded."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np
from scipy.stats import beta

from identify.calibration import choose_threshold, clopper_pearson_upper
from identify.config import FusionConfig
from identify.measurement import Decided, EvaluationData, LabelSpace, Neighbourhood, fused_matrix, knn_matrix, under_rules
from identify.openset import contains, own_spread, spread_floor

LAMBDAS = tuple(round(x, 1) for x in np.linspace(0.0, 1.0, 11))
KS = (1, 5, 10, 20, 50)
TEMPERATURES = (0.01, 0.03, 0.07, 0.1, 0.3, 1.0)
FOLDS = 5
NO_MATCH_RIGHT_AT_MOST = 0.1  # of the queries `no_match` is said of, at most this share had the right top-1
NO_MATCH_SIMILARITIES = tuple(round(x, 2) for x in np.arange(0.0, 1.0001, 0.05))
NO_MATCH_CLASSIFIER = tuple(round(x, 2) for x in np.arange(0.05, 0.9501, 0.05))
VOUCH_VOTES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
CONTRADICTING_VOTES = (0.3, 0.5, 1.01)
# The spread rule is measured here but not yet swept: the service can apply it only once it knows which
# references are one individual (leave-one-individual-out), which the reference records do not hold yet.
SPREAD_QUANTILES = (0.0,)


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




# ---- choosing the no_match thresholds -------------------------------------------------------------------------
def no_match_evidence(decided: Decided) -> tuple[np.ndarray, np.ndarray]:
    """Per answer what identify.fusion.decide's `no_match` rule reads: the nearest reference's similarity and the
    classifier's top probability (neither depends on the thresholds)."""
    nearest = np.array([max((v.similarity for v in a.votes), default=-1.0) for a in decided.answers])
    classifier = np.array([max((s.classifier for s in a.ranking), default=0.0) for a in decided.answers])
    return nearest, classifier


def no_match_share(decided: Decided, similarity: float, classifier: float) -> dict[str, Any]:
    """How often `no_match` would be said with these thresholds, and how often its top-1 was right anyway."""
    nearest, top = no_match_evidence(decided)
    said = (nearest < similarity) & (top < classifier)
    right = said & decided.correct
    return {"share": float(said.mean()) if len(said) else 0.0, "said": int(said.sum()), "top1_right": int(right.sum()),
            "top1_right_share": float(right.sum() / said.sum()) if said.any() else 0.0}


def choose_no_match(given: tuple[float, float], confidence: float, *answered: Decided) -> tuple[float, float]:
    """(no_match_similarity, no_match_classifier) chosen on these answers together (see the module); `given`:
    the thresholds evaluate was given, kept among equals; `confidence`: of the bound on the right share."""
    nearest, top = (np.concatenate(parts) for parts in zip(*(no_match_evidence(d) for d in answered), strict=True))
    correct = np.concatenate([d.correct for d in answered])
    sims, clfs = np.array(NO_MATCH_SIMILARITIES), np.array(NO_MATCH_CLASSIFIER)
    said = (nearest[None, None, :] < sims[:, None, None]) & (top[None, None, :] < clfs[None, :, None])
    count = said.sum(axis=2)
    right = (said & correct[None, None, :]).sum(axis=2)
    # the Clopper-Pearson upper bound of the right share (one-sided, per pair: the grid is not corrected for)
    upper = np.where(count > right, beta.ppf(confidence, right + 1, np.maximum(count - right, 1)), 1.0)
    honest = (count == 0) | (upper <= NO_MATCH_RIGHT_AT_MOST)
    most = count[honest].max()
    pairs = [(float(sims[i]), float(clfs[j])) for i, j in np.argwhere(honest & (count == most))]
    return min(pairs, key=lambda pair: (abs(pair[0] - given[0]) + abs(pair[1] - given[1]), pair))



# ---- choosing the open-set rules  ------------------------------------------------------------------------------
@dataclass
class RuleEvidence:
    """What the swept open-set rules (identify.openset: vouch_vote, contradicting_vote, spread_quantile) read of
    each answer, so that choosing them decides nothing again: per answer whether the other rules let it be
    confident, the classifier's share for another favourite and for the answer, the nearest reference of the
    answer and its species' spread."""

    decided: Decided
    others_allow: np.ndarray  # confident at a threshold of 0 with the swept rules off
    favourite: np.ndarray  # the classifier's favourite's share when it is another species (else -1)
    vouch: np.ndarray  # the classifier's share for the answer, where it could name it (else 2: never too low)
    nearest: np.ndarray  # the answer's nearest reference among the voters (-2: none)
    species: list[str]
    spread: dict[str, list[float]]

    @classmethod
    def of(cls, data: EvaluationData, decided: Decided, config: FusionConfig) -> "RuleEvidence":
        off = config.replace(vouch_vote=0.0, contradicting_vote=1.01, spread_quantile=0.0)
        base = under_rules(data, decided, off)
        favourite, vouch, nearest, species = [], [], [], []
        for a in base.answers:
            top = a.top
            liked = max(a.ranking, key=lambda s: s.classifier) if a.ranking else None
            coarser = top is None or liked is None or contains(liked, top)
            favourite.append(liked.classifier if not coarser and liked.name != top.name else -1.0)  # type: ignore[union-attr]
            vouch.append(top.classifier if not coarser and top.in_classes else 2.0)  # type: ignore[union-attr]
            nearest.append(a.support.nearest if a.support.nearest is not None else -2.0)
            species.append(top.name if top else "")
        groups = data.reference_groups or [None] * len(data.reference_labels)
        return cls(base, base.eligible, np.array(favourite), np.array(vouch), np.array(nearest), species,
                   own_spread(data.reference_embeddings, data.reference_labels, groups))

    def under(self, config: FusionConfig) -> Decided:
        """The answers' eligibility under `config`'s swept rules (the decisions themselves are not redone)."""
        allowed = self.others_allow & (self.favourite < config.contradicting_vote) & (self.vouch >= config.vouch_vote)
        if config.spread_quantile > 0.0:
            floors = {name: spread_floor(self.spread, name, config.spread_quantile) for name in set(self.species)}
            floor = np.array([floors[name] if floors[name] is not None else -2.0 for name in self.species])
            allowed &= self.nearest >= floor
        return replace(self.decided, eligible=allowed)


def thresholds_on(tuned: Decided, config: FusionConfig) -> tuple[dict[str, Any], float]:
    """The group thresholds and the pooled one, chosen on `tuned` as the calibration split will choose them."""
    from identify.risk import group_controls

    pooled = choose_threshold(tuned.top, tuned.correct, tuned.eligible, config.target_error, config.risk_confidence)
    return group_controls(tuned, config), pooled.threshold


def choose_open_set_rules(config: FusionConfig, data: EvaluationData, tuning: Decided,
                          left_out: list[tuple[EvaluationData, Decided]]) -> tuple[FusionConfig, dict[str, Any]]:
    """`config` with the open-set rules chosen (see the module), and what they were chosen on."""
    from identify.risk import confident_under

    if not left_out:
        return config, {"chosen_on": "given: no classifier outputs of the references to leave species out with"}
    photos = sum(len(decided.rows) for _, decided in left_out)
    tune_evidence = RuleEvidence.of(data, tuning, config)
    left_evidence = [RuleEvidence.of(asked, decided, config) for asked, decided in left_out]
    results = []
    for vouch, contradicting, spread in itertools.product(VOUCH_VOTES, CONTRADICTING_VOTES, SPREAD_QUANTILES):
        setting = config.replace(vouch_vote=vouch, contradicting_vote=contradicting, spread_quantile=spread)
        tuned = tune_evidence.under(setting)
        controls, pooled = thresholds_on(tuned, setting)
        covered = int(confident_under(tuned, controls, pooled).sum())
        leaked = sum(int(confident_under(evidence.under(setting), controls, pooled).sum()) for evidence in left_evidence)
        bound = clopper_pearson_upper(leaked, photos, config.risk_confidence)
        results.append((bound <= config.target_error, covered, -bound, -vouch, contradicting, -spread, leaked, setting))
    bounded, covered, bound, _, _, _, leaked, chosen = max(
        results, key=lambda r: (r[0], r[1], r[2], r[3], r[4], r[5]) if r[0] else (r[0], r[2], r[1], r[3], r[4], r[5]))
    return chosen, {"chosen_on": "leave-one-species-out over the references, photo alone; thresholds on the tuning split",
                    "vouch_vote": chosen.vouch_vote, "contradicting_vote": chosen.contradicting_vote,
                    "spread_quantile": chosen.spread_quantile, "species": len(left_out), "photos": photos,
                    "confident": leaked, "confident_share": leaked / photos if photos else 0.0,
                    "upper_bound": -bound, "bounded": bounded, "tuning_confident": covered,
                    "settings_tried": len(results)}
