"""The one decision function: one observation's evidence (the classifier's probabilities, the neighbours' votes,
the place-and-season prior, the taxonomy's names) and the settings in, the answer out. Pure: no I/O, no model, no
SQL. The service, `predict` and `evaluate` all call `answer`, so what `evaluate` measures is what is served.

    fuse (identify.fusion) -> calibrate -> x prior (when a place and date are known) -> decide -> roll up

Labels that name one taxon are one species here (`SpeciesNames`): the model's class label stands for the
taxon, a reference folder `Passer_domesticus` and a class "House sparrow" are the same answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from identify.calibration import Calibration
from identify.config import FusionConfig
from identify.fusion import CONFIDENT, Decision, Neighbour, RankedSpecies, calibrated, decide, fuse, with_prior
from identify.observation import Place
from identify.prior import FLOOR, PriorModel
from identify.rollup import GroupName, RollUp, roll_up
from identify.taxonomy import Taxon


class SpeciesNames:
    """Label -> taxon, and the one label that stands for each taxon in answers (the model's class first)."""

    def __init__(self, classes: Sequence[str], taxa: Mapping[str, Taxon | None]) -> None:
        self.taxa = taxa
        self._standing: dict[str, str] = {}  # scientific name -> label
        for label in [*classes, *taxa]:
            taxon = taxa.get(label)
            if taxon is not None:
                self._standing.setdefault(taxon.scientific_name, label)
        self.classes = [self.canonical(label) for label in classes]

    def knows(self, label: str) -> bool:
        return label in self.taxa

    def canonical(self, label: str) -> str:
        taxon = self.taxa.get(label)
        return self._standing.get(taxon.scientific_name, label) if taxon is not None else label


@dataclass(frozen=True)
class Answer:
    """What the evidence decided: every species with a score (best first, each with its taxon), the decision,
    the roll-up when not confident, and the place whose prior shaped it (None: the photos' evidence alone)."""

    ranking: list[RankedSpecies]
    decision: Decision
    rollup: RollUp | None
    place: Place | None
    votes: list[Neighbour]  # the neighbours as they voted (labels in the answer's label space)

    @property
    def top(self) -> RankedSpecies | None:
        return self.ranking[0] if self.ranking else None


def answer(probabilities: np.ndarray, neighbours: Sequence[Neighbour], names: SpeciesNames, config: FusionConfig,
           calibration: Calibration, prior: PriorModel | None = None, place: Place | None = None,
           group_name: GroupName | None = None) -> Answer:
    """The answer to one observation (see the module). `probabilities` are over `names.classes`; `neighbours`
    are nearest first, under any label of their taxon."""
    votes = [Neighbour(n.reference_id, names.canonical(n.species), n.similarity) for n in neighbours]
    fused = fuse(names.classes, probabilities, votes, config)
    ranking = [s.with_taxon(names.taxa.get(s.name)) for s in calibrated(fused, calibration, votes)]
    if place is not None and prior is not None and not prior.empty:
        ranking = with_prior(ranking, prior.at(place, (s.taxon.scientific_name for s in ranking if s.taxon)), FLOOR)
    else:
        place = None
    decision = decide(ranking, votes, config)
    rollup = roll_up(ranking, config.confident_score, group_name) if decision.decision != CONFIDENT else None
    return Answer(ranking, decision, rollup, place, votes)
