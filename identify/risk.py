"""Risk per group (Mondrian, or group-conditional, risk control): the `confident` threshold chosen for each group
of answers on that group's own calibration queries, so the bound on the error among confident answers holds
in the group, not only on average over groups.

The groups are those identify.scoring.answer_groups names an answer by: its species (`species:<label>`), and
`known`, `new` or `contested` (what the classifier can vouch for). Every coarse group (`known`, `new`,
`contested`, with or without `+place`) gets its own threshold, chosen by the same Learn-then-Test procedure as
the pooled one (identify.calibration.choose_threshold), at the same target and confidence, for that group
alone: the guarantee is per group (each group's family-wise error at the stated level), which is what Mondrian
conformal risk control gives. A coarse group whose calibration answers are too few to certify any threshold is
held back: nothing in it is confident (the pooled bound, an average over groups, says nothing of a group it
barely saw: on the simulation, a `contested` group on the pooled threshold erred 9 times in 67). A species
whose calibration queries hold at least MIN_ANSWERED that nothing but the score kept from `confident` gets its
own threshold, which comes before its coarse group's; one with fewer takes its coarse group's.

Ranks (`rank_controls`): an answer whose species is not confident may be confident at a higher rank. Each rank
(genus, then family, then order) gets its own threshold on the summed score of its best taxon, chosen by the
same Learn-then-Test procedure over the calibration answers that reach it (not confident at species nor at a
lower rank, not `no_match`), and right when that taxon is the truth's: the error at the rank answered is bounded
per rank, as the species' is per group (the answers a rank sees depend on the thresholds below it, chosen on the
same answers first; each rank's bound is conditional on them). A rank is certified, and answered, on the
photo alone's scores, with or without a place (identify.scoring.answer says why). A rank with too few answers to certify any
threshold certifies none, and answers that reach it stay `needs_review`. The calibration queries hold no bird
of a species without references, whose look-alike in another genus would be named at genus with confidence, nor
one of a genus without references, answered from another family: so no rank threshold is tested below where
the references' photos, answered with their species, their genus or their family left out (leave-one-taxon-out),
are answered wrong at that rank within the target, in each of the three (as the species' open-set rules are
chosen).

The figures a report gives per group and per true species are measured on the test split, with the thresholds
as served."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Iterator, Sequence

import numpy as np

from identify.calibration import (MIN_ANSWERED, NOTHING_CONFIDENT, THRESHOLD_GRID, Calibration, RiskControl,
                                  choose_threshold, clopper_pearson_upper, fewest_testable)
from identify.config import FusionConfig
from identify.fusion import CONFIDENT, NO_MATCH
from identify.measurement import (Decided, EvaluationData, _checked_figures, _share, decide_rows, neighbourhood,
                                  query_group, under_rules)
from identify.prior import PriorModel
from identify.rollup import RANK_GROUP, RANKS
from identify.scoring import ALL, PLACED, RISK_GROUPS


def _members(decided: Decided, group: str) -> np.ndarray:
    return np.array([group in a.groups for a in decided.answers], dtype=bool)


def group_controls(on_calibration: Decided, config: FusionConfig) -> dict[str, RiskControl]:
    """Each group with enough eligible calibration queries (see the module), and the threshold chosen for it."""
    groups = sorted({group for a in on_calibration.answers for group in a.groups} - {ALL})  # ALL: the pooled one
    controls = {}
    for group in groups:
        member = _members(on_calibration, group)
        if not coarse(group) and int((member & on_calibration.eligible).sum()) < MIN_ANSWERED:
            continue  # a species with too few to bound alone: its coarse group's threshold
        # A coarse group always gets its own: one with too few answers to certify any threshold is held back
        # (nothing in it confident), since the pooled bound says nothing of a group it barely saw.
        # Within a group, thresholds are tested from the fewest answers a bound can certify at all: the pooled
        # floor of MIN_ANSWERED would leave a group of 150 only thresholds that answer two thirds of it. Every
        # answer with a place is in ALL + PLACED: that one is pooled, and tested as the pooled one is.
        floor = MIN_ANSWERED if group == ALL + PLACED else fewest_testable(config.target_error, config.risk_confidence)
        controls[group] = choose_threshold(on_calibration.top[member], on_calibration.correct[member],
                                           on_calibration.eligible[member], config.target_error,
                                           config.risk_confidence, min_answered=floor)
    return controls


@dataclass(frozen=True)
class RankEvidence:
    """What a rank's open-set floor reads of answers to birds whose taxon has no references (leave-one-out at
    species, genus or family): per answer the best taxon's summed score at each rank, whether it is the
    truth's, and whether a rank may take it (not confident at species, not `no_match`)."""

    rank_scores: np.ndarray
    rank_right: np.ndarray
    reaching: np.ndarray

    @classmethod
    def of(cls, decided: Decided, species_confident: np.ndarray | None = None) -> "RankEvidence":
        confident = species_confident if species_confident is not None else np.zeros(len(decided.rows), dtype=bool)
        return cls(decided.rank_scores, decided.rank_right, _reaching(decided, confident))

    @classmethod
    def joined(cls, parts: Sequence["RankEvidence"]) -> "RankEvidence":
        ranks = len(RANKS)
        return cls(np.concatenate([p.rank_scores for p in parts]) if parts else np.zeros((0, ranks)),
                   np.concatenate([p.rank_right for p in parts]) if parts else np.zeros((0, ranks), dtype=bool),
                   np.concatenate([p.reaching for p in parts]) if parts else np.zeros(0, dtype=bool))


def rank_controls(on_calibration: Decided, species_confident: np.ndarray, config: FusionConfig,
                  open_set: Sequence[RankEvidence] = ()) -> dict[str, RiskControl]:
    """Each rank's threshold (see the module), as `rank:<rank>`, chosen on the calibration answers on the photo
    alone given whether each is confident at species under the thresholds chosen for it.
    `open_set`: answers to birds of a taxon left out of the references (rank_open_set): no threshold is tested
    below the lowest at which, in each of them, the share answered wrong at that rank stays bounded by the
    target (a bird of a species without references is right at genus only when its genus has others with
    references, and at family only when its family does)."""
    reaching = _reaching(on_calibration, species_confident)
    left = [(evidence, evidence.reaching.copy()) for evidence in open_set]
    controls = {}
    for position, rank in enumerate(RANKS):
        scores = on_calibration.rank_scores[:, position]
        floor = max((_open_set_floor(evidence, still, position, config) for evidence, still in left), default=0.0)
        control = choose_threshold(scores, on_calibration.rank_right[:, position], reaching & (scores >= 0.0),
                                   config.target_error, config.risk_confidence,
                                   grid=[t for t in THRESHOLD_GRID if t >= floor],
                                   min_answered=fewest_testable(config.target_error, config.risk_confidence))
        controls[RANK_GROUP + rank] = control
        if control.threshold < NOTHING_CONFIDENT:  # answered at this rank: the next one sees the rest
            reaching &= scores < control.threshold
            left = [(evidence, still & (evidence.rank_scores[:, position] < control.threshold))
                    for evidence, still in left]
    return controls


def rank_open_set(species_left_out: list[tuple[Decided, np.ndarray]],
                  wider: Sequence[RankEvidence]) -> list[RankEvidence]:
    """The open set a rank must hold against, from the deployment's references: each species left out (its
    photos as left_out_answers gives them, so those confident at species are not the ranks' to answer), and
    `wider` (wider_open_set: genera and families left out whole)."""
    return [RankEvidence.joined([RankEvidence.of(ruled, confident) for ruled, confident in species_left_out]),
            *wider]


def wider_open_set(data: EvaluationData, config: FusionConfig, calibration: Calibration) -> list[RankEvidence]:
    """Each genus left out of the references whole, and each family: a bird of a genus nobody has given
    references is answered from other genera, and "family" is right only when they are of its family. (Their
    species are all absent, so none is right at species: no threshold changes what a rank may take.)"""
    return [RankEvidence.joined([RankEvidence.of(decided) for _, decided
                                 in leave_one_taxon_out(data, config, calibration, rank)])
            for rank in ("genus", "family")]


def left_out_answers(left_out: list[tuple[EvaluationData, Decided]], config: FusionConfig,
                     controls: dict[str, RiskControl], pooled: float) -> list[tuple[Decided, np.ndarray]]:
    """The left-out species' answers under `config`'s open-set rules, with which are confident at species under
    these thresholds."""
    out = []
    for asked, decided in left_out:
        ruled = under_rules(asked, decided, config)
        out.append((ruled, confident_under(ruled, controls, pooled)))
    return out


def _reaching(decided: Decided, species_confident: np.ndarray) -> np.ndarray:
    """The answers a rank may take: not confident at species, not `no_match`."""
    return ~species_confident & np.array([d != NO_MATCH for d in decided.decisions], dtype=bool)


def _open_set_floor(evidence: RankEvidence, reaching: np.ndarray, position: int, config: FusionConfig) -> float:
    """The lowest threshold of the grid, tested from the top down, under which the Clopper-Pearson bound on the
    share of these left-out photos answered wrong at this rank stays at the target (0: none left out)."""
    photos = len(evidence.reaching)
    if photos == 0:
        return 0.0
    scores, wrong = evidence.rank_scores[:, position], reaching & ~evidence.rank_right[:, position]
    floor = NOTHING_CONFIDENT
    for threshold in sorted(THRESHOLD_GRID, reverse=True):
        if clopper_pearson_upper(int((wrong & (scores >= threshold)).sum()), photos, config.risk_confidence) \
                > config.target_error:
            break
        floor = threshold
    return floor


def coarse(group: str) -> bool:
    """Whether a group is one of every answer's (known, new, contested, all; with or without a place)."""
    return group.removesuffix(PLACED) in (*RISK_GROUPS, ALL)


def with_group_thresholds(calibration: Calibration, controls: dict[str, RiskControl]) -> Calibration:
    return replace(calibration, thresholds=tuple(sorted((g, c.threshold) for g, c in controls.items())))


def group_report(data: EvaluationData, tested: Decided, config: FusionConfig, calibration: Calibration,
                 controls: dict[str, RiskControl] | None = None) -> dict[str, Any]:
    """Error among confident answers per answer group (with the threshold each was held to: its own from
    `calibration`, else the pooled one; `controls` say what each own one was chosen on, when just chosen), per
    true group (known / new species) and per true species."""
    confident = np.array([d == CONFIDENT for d in tested.decisions], dtype=bool)
    confidence = config.risk_confidence
    by_answer: dict[str, Any] = {}
    thresholds, controls = dict(calibration.thresholds), controls or {}
    for group in sorted({g for a in tested.answers for g in a.groups}):
        member = _members(tested, group)
        if group not in thresholds and not coarse(group):
            continue  # a species on the pooled threshold: counted in its coarse group
        chosen = controls.get(group)
        by_answer[group] = {
            "threshold": thresholds.get(group, config.confident_score),
            "threshold_from": "own" if group in thresholds else "pooled (too few calibration queries)",
            "calibration": ({"answered": chosen.answered, "errors": chosen.errors, "upper_bound": chosen.upper_bound}
                            if chosen is not None else None),
            **_checked_figures(tested.correct[member], confident[member], confidence)}
    by_answer.pop(ALL, None)  # the pooled threshold: the overall figures already

    truths = [data.query_labels[row] for row in tested.rows]
    true_groups = np.array([query_group(data, label) for label in truths])
    by_truth = {name: _checked_figures(tested.correct[true_groups == name], confident[true_groups == name], confidence)
                for name in ("known", "new") if (true_groups == name).any()}
    labels = np.array(truths)
    species = {label: _checked_figures(tested.correct[labels == label], confident[labels == label], confidence)
               for label in sorted(set(truths))}
    worst = max(by_truth.values(), key=lambda f: f["realised_error"], default=None)
    return {"by_answer": by_answer, "by_truth": by_truth, "species": species,
            "worst_true_group_error": worst["realised_error"] if worst else 0.0,
            "min_answered": MIN_ANSWERED,
            "method": "Mondrian: Learn-then-Test per group with Clopper-Pearson bounds; pooled below min_answered"}


OPEN_SET_SPECIES = 4  # species whose references are withheld, at most (a fifth of those the classifier knows)


def open_set_species(data: EvaluationData, rows: np.ndarray, seed: int,
                     exclude: frozenset[str] = frozenset()) -> list[str]:
    """Species of these queries the classifier knows whose references can be withheld (not `exclude`): a
    fifth of them, at most OPEN_SET_SPECIES, drawn with the seed; none when too few species would be left."""
    known = sorted({data.query_labels[row] for row in rows} & set(data.classes) & set(data.reference_labels))
    count = min(OPEN_SET_SPECIES, len(known) // 5)
    free = [label for label in known if label not in exclude]
    if count == 0 or len(set(data.reference_labels)) <= count + len(exclude) or len(free) < count:
        return []
    return sorted(np.random.default_rng(seed).choice(free, size=count, replace=False).tolist())


def open_set_answers(data: EvaluationData, rows: np.ndarray, withheld: list[str], config: FusionConfig,
                     calibration: Calibration, prior: PriorModel | None = None) -> Decided:
    """The queries among `rows` of the withheld species, answered as served against the references without
    theirs."""
    kept = np.array([label not in withheld for label in data.reference_labels], dtype=bool)
    without = replace(data, reference_embeddings=data.reference_embeddings[kept],
                      reference_labels=[label for label, keep in zip(data.reference_labels, kept, strict=True) if keep])
    asked = np.array([row for row in rows if data.query_labels[row] in withheld], dtype=int)
    return decide_rows(without, neighbourhood(without, max(config.k, 1)), asked, config, calibration, prior)


def open_set_block(data: EvaluationData, test: np.ndarray, config: FusionConfig, calibration: Calibration,
                   seed: int, prior: PriorModel | None = None) -> dict[str, Any]:
    """The open set: species the classifier knows whose references are all withheld (their look-alikes keep
    theirs), their test queries answered as served. Nothing can be right, as no reference can be found; what
    matters is how many are answered `confident` anyway (the goal: at most the target error's share)."""
    withheld = open_set_species(data, test, seed)
    if not withheld:
        return {"measured": False}
    decided = open_set_answers(data, test, withheld, config, calibration, prior)
    rows = decided.rows
    confident = np.array([d == CONFIDENT for d in decided.decisions], dtype=bool)
    ranks, right = decided.answered_ranks()
    at_rank = (ranks != "none") & (ranks != "species")
    sure = [a for a, is_sure in zip(decided.answers, confident, strict=True) if is_sure]
    unsure = [a for a, is_sure in zip(decided.answers, confident, strict=True) if not is_sure]
    return {"measured": True, "species": withheld, "queries": int(len(rows)),
            "confident_share": float(confident.mean()) if len(rows) else 0.0,
            "no_match_share": float(np.mean([d == NO_MATCH for d in decided.decisions])) if len(rows) else 0.0,
            "confident_answers": dict(sorted(Counter(a.top.name for a in sure if a.top is not None).items())),
            "reasons": dict(Counter(reason for a in unsure for reason in a.decision.reasons)),
            # answered confident at a higher rank instead: right when the withheld species' taxon is it
            "at_rank": {"answered": int(at_rank.sum()), "share": _share(at_rank),
                        "wrong": int((at_rank & ~right).sum()), "wrong_share": _share(at_rank & ~right),
                        "by_rank": dict(sorted(Counter(ranks[at_rank].tolist()).items()))},
            "target": config.target_error}


def leave_one_species_out(data: EvaluationData, config: FusionConfig,
                          calibration: Calibration) -> list[tuple[EvaluationData, Decided]]:
    """The open set the deployment's own references show: each species' reference photos (their classifier
    outputs beside them) answered on the photo alone against the references without that species, as a bird of
    a species nobody has given references would be. One (references searched, answers) per species; none
    without the classifier's outputs on the references."""
    return list(leave_one_taxon_out(data, config, calibration, "species"))


def leave_one_taxon_out(data: EvaluationData, config: FusionConfig, calibration: Calibration,
                        rank: str) -> Iterator[tuple[EvaluationData, Decided]]:
    """leave_one_species_out, leaving out a whole taxon of `rank` (species, genus, family) at a time; a
    reference without a taxon at that rank is left out with its own label's. Yields one taxon at a time, so a
    caller that keeps only figures holds one taxon's answers at once."""
    if data.reference_probabilities is None:
        return
    labels = np.array(data.reference_labels)
    keys = labels if rank == "species" else np.array(
        [getattr(data.taxa.get(label), rank, None) or label for label in data.reference_labels])
    groups = data.reference_groups or [None] * len(labels)
    answerable = np.isfinite(data.reference_probabilities).all(axis=1)  # NaN: no output kept, searched only
    for key in sorted(set(keys.tolist())):
        mine, kept = (keys == key) & answerable, keys != key
        if not kept.any() or not mine.any():
            continue
        asked = replace(
            data, query_embeddings=data.reference_embeddings[mine], probabilities=data.reference_probabilities[mine],
            query_labels=labels[mine].tolist(), query_places=None, query_groups=None, query_paths=None,
            view_embeddings=None, view_probabilities=None, reference_embeddings=data.reference_embeddings[kept],
            reference_labels=labels[kept].tolist(), reference_probabilities=data.reference_probabilities[kept],
            reference_groups=[g for g, keep in zip(groups, kept, strict=True) if keep])
        rows = np.arange(int(mine.sum()))
        yield asked, decide_rows(asked, neighbourhood(asked, max(config.k, 1)), rows, config, calibration)


def served_thresholds(decided: Decided, controls: dict[str, RiskControl], pooled: float) -> np.ndarray:
    """The threshold each answer is held to: its most specific group's own, else the pooled one."""
    own = {group: control.threshold for group, control in controls.items()}
    return np.array([next((own[g] for g in a.groups if g in own), pooled) for a in decided.answers])


def confident_under(decided: Decided, controls: dict[str, RiskControl], pooled: float) -> np.ndarray:
    """Which answers would be confident under these thresholds (their other rules as decided)."""
    return decided.eligible & (decided.top >= served_thresholds(decided, controls, pooled))
