"""Evidence a missing species would not fake: what identify.scoring asks of an answer before it may be confident.

A threshold on the calibrated score bounds the error on the species and the reference set it was measured on.
Two situations fake a high score all the same:
- **Thin evidence.** One reference decides: k neighbours that are one photo, or a query that is a copy of a
  reference a curator labelled wrongly. So the answer needs `min_support` distinct references of its species
  among the voters, and a reference at `same_photo_similarity` or closer is the query's own photo (re-saved,
  cropped, flipped): the answer names it (`same_photo_as`) and it is not counted as support.
- **Open set.** A species without references whose look-alike has them: the neighbours can only vote for the
  look-alike, so their agreement says nothing against the missing species. When the classifier's favourite is
  another species (at `unreferenced_vote` or more) with fewer than `min_support` references, the neighbours
  could not have spoken for it, and the answer is not confident. A species with no references at all is never
  confident on the classifier alone for the same reason: the classifier too is fooled by what it never saw.
  A favourite that is another species at `contradicting_vote` or more keeps the answer from confident too
  (a classifier fooled on a species whose references are missing looks like this); one that is the answer's
  genus or family agrees with it.

- **Unvouched.** The answer is one of the classifier's own classes and the classifier gives it less than
  `vouch_vote`: it could have named it and does not, so the neighbours alone speak for it (the photo of a
  species without references that looks like it). Never said of a species only references know: the
  classifier's silence about what it cannot name is no evidence.
- **Outside the species' spread.** The nearest reference of the answer is less similar than `spread_quantile`
  of the species' own photos are to their nearest reference of another individual (`spread_floors`,
  measured on the references by leave-one-individual-out): the photo lies outside where its answer's birds lie.

`evaluate` chooses `vouch_vote`, `contradicting_vote` and `spread_quantile` by leave-one-species-out over the
references (identify.tuning.choose_open_set_rules), so that the share of a missing species' photos answered
`confident` is bounded on the deployment's own data.

These are reasons for review, not a change of the ranking: the scores stay what fusion and calibration made
them, and the curator sees why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from identify.config import FusionConfig
from identify.fusion import Neighbour, RankedSpecies

THIN_SUPPORT = "thin_support"
NAMED_SPECIES_UNREFERENCED = "named_species_unreferenced"
CLASSIFIER_NAMES_ANOTHER = "classifier_names_another"
CLASSIFIER_DOES_NOT_VOUCH = "classifier_does_not_vouch"
OUTSIDE_SPREAD = "outside_species_spread"


@dataclass(frozen=True)
class Support:
    """What backs the top answer among the voters."""

    references: int  # distinct references of the top species among the k voters, copies of the photo left out
    same_photo_as: int | None  # the nearest reference that is the query's own photo, if any
    unreferenced_favourite: str | None  # the classifier's favourite, when no references can speak for it
    contradicting_favourite: str | None = None  # the classifier's favourite, when it strongly names another
    unvouched: bool = False  # a class of the classifier it gives under vouch_vote
    nearest: float | None = None  # the nearest reference of the answer among the voters (cosine)
    spread_floor: float | None = None  # the answer's floor at spread_quantile (None: unmeasured or off)

    def reasons(self, config: FusionConfig) -> tuple[str, ...]:
        """Why the answer may not be confident, by this module's rules (none: it may)."""
        reasons = []
        if self.references < config.min_support:
            reasons.append(THIN_SUPPORT)
        if self.unreferenced_favourite is not None:
            reasons.append(NAMED_SPECIES_UNREFERENCED)
        elif self.contradicting_favourite is not None:
            reasons.append(CLASSIFIER_NAMES_ANOTHER)
        if self.unvouched:
            reasons.append(CLASSIFIER_DOES_NOT_VOUCH)
        if self.spread_floor is not None and (self.nearest is None or self.nearest < self.spread_floor):
            reasons.append(OUTSIDE_SPREAD)
        return tuple(reasons)


def contains(group: RankedSpecies, species: RankedSpecies) -> bool:
    """Whether `group` is a taxon above `species` (an ImageNet class `toucan` is the genus Ramphastos)."""
    if group.taxon is None or species.taxon is None or group.taxon.rank == "species":
        return False
    return group.taxon.scientific_name in (species.taxon.genus, species.taxon.family, species.taxon.order)


def support_of(ranking: Sequence[RankedSpecies], votes: Sequence[Neighbour],
               reference_counts: Mapping[str, int] | None, config: FusionConfig,
               spread_floors: Mapping[str, Sequence[float]] | None = None) -> Support:
    """The top answer's support (see the module). `votes` are nearest first, in the ranking's label space;
    `reference_counts`: references per species of the searched set (None: unknown, the open-set rule is off);
    `spread_floors`: per species its references' leave-one-individual-out nearest similarities, sorted (None or a
    species missing: the spread rule is off for it)."""
    if not ranking:
        return Support(0, None, None)
    top = ranking[0]
    voters = list(votes)[:config.k]
    copies = [v for v in voters if v.similarity >= config.same_photo_similarity]
    copy_ids = {v.reference_id for v in copies}
    backing = {v.reference_id for v in voters if v.species == top.name and v.reference_id not in copy_ids}
    same_photo = copies[0].reference_id if copies else None
    nearest = max((v.similarity for v in voters if v.species == top.name and v.reference_id not in copy_ids),
                  default=None)
    floor = spread_floor(spread_floors, top.name, config.spread_quantile)
    favourite = max(ranking, key=lambda s: s.classifier)
    if contains(favourite, top):  # the classifier names the answer's genus or family: the same answer, coarser
        return Support(len(backing), same_photo, None, None, False, nearest, floor)
    unreferenced = None
    if reference_counts is not None and favourite.name != top.name and \
            favourite.classifier >= config.unreferenced_vote and \
            reference_counts.get(favourite.name, 0) < config.min_support:
        unreferenced = favourite.name
    contradicting = favourite.name if favourite.name != top.name and \
        favourite.classifier >= config.contradicting_vote else None
    unvouched = top.in_classes and top.classifier < config.vouch_vote
    return Support(len(backing), same_photo, unreferenced, contradicting, unvouched, nearest, floor)


def spread_floor(floors: Mapping[str, Sequence[float]] | None, species: str, quantile: float) -> float | None:
    """The similarity under which `quantile` of the species' own reference photos lie (None: off or unmeasured)."""
    if quantile <= 0.0 or floors is None or not floors.get(species):
        return None
    values = floors[species]
    return float(values[min(int(quantile * len(values)), len(values) - 1)])


def own_spread(embeddings: np.ndarray, labels: Sequence[str], groups: Sequence[object]) -> dict[str, list[float]]:
    """Per species, each reference's cosine similarity to its nearest reference of the species from another
    individual or source (leave-one-individual-out), sorted: where the species' birds lie. A species of one
    individual has none."""
    units = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    named: dict[object, int] = {}
    # a reference without a group is its own individual
    codes = np.array([named.setdefault(group, len(named)) if group is not None else -1 - row
                      for row, group in enumerate(groups)])
    by_species: dict[str, list[int]] = {}
    for row, label in enumerate(labels):
        by_species.setdefault(label, []).append(row)
    out = {}
    for label, rows in by_species.items():
        similarities = units[rows] @ units[rows].T
        similarities[codes[rows][:, None] == codes[rows][None, :]] = -np.inf
        nearest = similarities.max(axis=1)
        out[label] = sorted(float(x) for x in nearest[np.isfinite(nearest)])
    return out
