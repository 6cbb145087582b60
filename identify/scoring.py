"""The one decision function: one observation's evidence (the classifier's probabilities, the neighbours' votes,
the place-and-season prior, the taxonomy's names) and the settings in, the answer out. Pure: no I/O, no model, no
SQL. The service, `predict` and `evaluate` all call `answer`, so what `evaluate` measures is what is served.

    fuse (identify.fusion) -> calibrate -> x prior (when a place and date are known)
        -> support (identify.openset: thin evidence, open set) -> decide
        -> when the species is not confident: the rank that holds (identify.rollup), else a roll-up suggestion

Labels that name one species are one species here (`SpeciesNames`): a reference folder `Passer_domesticus`
and a class "House sparrow" are the same answer, named `Passer domesticus`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from identify.calibration import NOTHING_CONFIDENT, Calibration
from identify.config import FusionConfig
from identify.fusion import CONFIDENT, NEEDS_REVIEW, Decision, Neighbour, RankedSpecies, calibrated, decide, fuse, with_prior
from identify.observation import Place
from identify.openset import Support, support_of
from identify.prior import FLOOR, PriorModel
from identify.rollup import RANK_GROUP, RANKS, GroupName, RollUp, best_taxon, certified_rank, roll_up
from identify.taxonomy import Taxon, species_key


class SpeciesNames:
    """Label -> taxon, and the species each label stands for in answers (identify.taxonomy.species_key): the
    scientific name of its species-rank taxon, else the label itself. `taxa` knows the species keys too."""

    def __init__(self, classes: Sequence[str], taxa: Mapping[str, Taxon | None]) -> None:
        self.taxa: dict[str, Taxon | None] = dict(taxa)
        for label, taxon in taxa.items():
            self.taxa.setdefault(species_key(label, taxon), taxon)
        self.classes = [self.canonical(label) for label in classes]

    def knows(self, label: str) -> bool:
        return label in self.taxa

    def counts(self, per_label: Mapping[str, int]) -> dict[str, int]:
        """Counts per label summed per species."""
        out: dict[str, int] = {}
        for label, count in per_label.items():
            out[self.canonical(label)] = out.get(self.canonical(label), 0) + count
        return out

    def canonical(self, label: str) -> str:
        return species_key(label, self.taxa.get(label))


@dataclass(frozen=True)
class Answer:
    """What the evidence decided: every species with a score (best first, each with its taxon), the decision,
    the roll-up when the species is not confident (certified: the answer is `confident` at its rank), and the
    place whose prior shaped it (None: the photos' evidence alone)."""

    ranking: list[RankedSpecies]
    decision: Decision
    rollup: RollUp | None
    place: Place | None
    votes: list[Neighbour]  # the neighbours as they voted (labels in the answer's label space)
    support: Support  # what backs the top answer (identify.openset)
    risk_bounded: bool  # its threshold was chosen, for answers like it, to bound the error (and still holds)
    groups: tuple[str, ...]  # the risk groups of the answer, most specific first (answer_groups)
    threshold: float  # the confident threshold it was held to: its group's own, else the pooled one
    # the ranking on the photo alone's evidence (the same list as `ranking` without a place): what a rank's
    # threshold is held against
    alone: list[RankedSpecies] = field(default_factory=list)
    # its best taxon at each of identify.rollup.RANKS (None: no taxon there), once worked out (ranks_of):
    # the service works them out only where a rank may answer; evaluate for every answer
    by_rank: tuple[RollUp | None, ...] = ()

    @property
    def top(self) -> RankedSpecies | None:
        return self.ranking[0] if self.ranking else None

    @property
    def rank(self) -> str | None:
        """The rank the answer is confident at: species, or the certified roll-up's; None when not confident."""
        return answered_rank(str(self.decision.decision), self.rollup)


def answered_rank(decision: str, rollup: RollUp | None) -> str | None:
    """species when `confident` without a certified roll-up, the roll-up's rank with one, else None."""
    if decision != CONFIDENT:
        return None
    return rollup.rank if rollup is not None and rollup.certified else "species"


CALIBRATION_STALE = "calibration_stale"
NEW_HERE = "new_here"  # a species only references know that has not yet earned confidence (identify.certify)
PLACE_CHANGES_ANSWER = "place_changes_answer"  # the place moved the answer, and no threshold was certified with one
RECERTIFYING = "recertifying"  # the answer's species had its references changed since the thresholds were certified
RISK_OVER_TARGET = "risk_over_target"
KNOWN, NEW, CONTESTED, ALL = "known", "new", "contested", "all"
RISK_GROUPS = (KNOWN, NEW, CONTESTED)
SPECIES_GROUP = "species:"
PLACED = "+place"  # the suffix of every group of an answer the prior shaped


def answer_groups(ranking: Sequence[RankedSpecies], votes: Sequence[Neighbour], k: int,
                  placed: bool = False) -> tuple[str, ...]:
    """The groups whose risk an answer counts in, most specific first (Mondrian risk control: each group may
    have its own threshold, chosen on its own calibration queries; identify.risk):
    - `species:<label>`, the answer's species;
    - `new` when the classifier cannot name the answer (only references know it); `contested` when it can, but
      a species it cannot name is among the k voters: the classifier's agreement is then no evidence against
      that one (the look-alike of a new species); `known` otherwise;
    - `all`, every answer: its threshold is FusionConfig.confident_score.
    An answer the place-and-season prior shaped counts in the same groups with `+place` (its scores are other
    scores: a threshold chosen without the prior bounds nothing with it, and the other way round)."""
    suffix = PLACED if placed else ""
    if not ranking:
        return (KNOWN + suffix, ALL + suffix)
    top = ranking[0]
    outside = {s.name for s in ranking if not s.in_classes}
    if not top.in_classes:
        coarse = NEW
    elif any(v.species in outside and v.species != top.name for v in list(votes)[:k]):
        coarse = CONTESTED
    else:
        coarse = KNOWN
    return (SPECIES_GROUP + top.name + suffix, coarse + suffix, ALL + suffix)


def answer(probabilities: np.ndarray, neighbours: Sequence[Neighbour], names: SpeciesNames, config: FusionConfig,
           calibration: Calibration, prior: PriorModel | None = None, place: Place | None = None,
           group_name: GroupName | None = None, reference_counts: Mapping[str, int] | None = None,
           stale: bool = False, over_target: frozenset[str] = frozenset(),
           spread_floors: Mapping[str, Sequence[float]] | None = None,
           held_back: frozenset[str] = frozenset()) -> Answer:
    """The answer to one observation (see the module). `probabilities` are over `names.classes`; `neighbours`
    are nearest first, under any label of their taxon; `reference_counts`: references per label of the searched
    set (None: unknown); `stale`: the calibration no longer describes the references served (CalibrationState),
    so nothing is confident until `evaluate` is run again; `over_target`: risk groups whose live audit shows their
    error past the target (identify.audit): nothing in them is confident either; `spread_floors`: per species
    its references' own spread (identify.openset.own_spread; None: the spread rule is off); `held_back`: species
    whose references changed since the thresholds were certified (identify.certifications): named, not
    confident, until a certification covers them."""
    votes = [Neighbour(n.reference_id, names.canonical(n.species), n.similarity) for n in neighbours]
    fused = fuse(names.classes, probabilities, votes, config)
    ranking = alone = [s.with_taxon(names.taxa.get(s.name)) for s in calibrated(fused, calibration, votes)]
    if place is not None and prior is not None and not prior.empty:
        ranking = with_prior(ranking, prior.at(place, (s.taxon.scientific_name for s in ranking if s.taxon)), FLOOR)
    else:
        place = None
    # An answer the prior shaped is decided under thresholds certified with a place; where a calibration has
    # none (certified from references, which carry no place), under the photo alone's, and only where the place
    # leaves the answer as the photo gave it (a place never makes an uncertified answer confident).
    placed_certified = any(group.endswith(PLACED) for group, _ in calibration.thresholds)
    judged = alone if place is not None and calibration.risk_bounded and not placed_certified else ranking
    counts = names.counts(reference_counts) if reference_counts is not None else None
    support = support_of(judged, votes, counts, config, spread_floors)
    groups = answer_groups(judged, votes, config.k, placed=place is not None and judged is ranking)
    own = calibration.threshold_for(groups)
    threshold = own if own is not None else config.confident_score
    audited_over = bool(over_target & {*groups, ALL})
    recertifying = bool(ranking) and ranking[0].name in held_back
    # a species only references know, in a deployment that has not certified it: named, and said to be new here
    unearned = bool(ranking) and not ranking[0].in_classes and calibration.risk_bounded and \
        threshold >= NOTHING_CONFIDENT
    moved = judged is not ranking and bool(ranking) and (ranking[0].name != judged[0].name or
                                                         ranking[0].expected_here is False)
    blockers = (*support.reasons(config), *((CALIBRATION_STALE,) if stale else ()),
                *((RECERTIFYING,) if recertifying else ()), *((NEW_HERE,) if unearned else ()),
                *((PLACE_CHANGES_ANSWER,) if moved else ()), *((RISK_OVER_TARGET,) if audited_over else ()))
    decision = decide(judged, votes, replace(config, confident_score=threshold), blockers)
    # Bounded: fitted by evaluate or certified, still current (with a place: under thresholds chosen with one, or
    # the photo alone's where the place did not change the answer).
    bounded = calibration.risk_bounded and not stale
    # A rank is certified on the photo alone's scores, with or without a place: its open-set floor is measured
    # on the references (which carry no place), and a prior can lift a wrong family's sum in the place where
    # both live (measured: 10 % of the open set wrong at family with place, where the photo alone held 4 %).
    rollup: RollUp | None = None
    by_rank: tuple[RollUp | None, ...] = ()
    if decision.decision == NEEDS_REVIEW and bounded and not audited_over:
        by_rank = ranks_of(alone)
        rollup = certified_rank(by_rank, lambda rank: _rank_threshold(calibration, rank), group_name)
        if rollup is not None and held_back & set(rollup.members):
            rollup = None  # a species the change touched is among its members: not certified against it yet
        if rollup is not None:  # confident at its rank; the reasons say why not at species
            decision = Decision(CONFIDENT, decision.reasons, decision.uncertainty)
    if rollup is None and decision.decision != CONFIDENT:
        rollup = roll_up(ranking, config.confident_score, group_name)
    return Answer(ranking, decision, rollup, place, votes, support, bounded, groups, threshold, alone, by_rank)


def ranks_of(ranking: Sequence[RankedSpecies]) -> tuple[RollUp | None, ...]:
    """The best taxon at each of identify.rollup.RANKS (a pass over the whole ranking each)."""
    return tuple(best_taxon(ranking, rank) for rank in RANKS)


def _rank_threshold(calibration: Calibration, rank: str) -> float | None:
    """A rank's certified threshold, None where that rank certified none."""
    threshold = calibration.threshold_for((RANK_GROUP + rank,))
    return threshold if threshold is not None and threshold < NOTHING_CONFIDENT else None
