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

These are reasons for review, not a change of the ranking: the scores stay what fusion and calibration made
them, and the curator sees why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from identify.config import FusionConfig
from identify.fusion import Neighbour, RankedSpecies

THIN_SUPPORT = "thin_support"
NAMED_SPECIES_UNREFERENCED = "named_species_unreferenced"
CLASSIFIER_NAMES_ANOTHER = "classifier_names_another"


@dataclass(frozen=True)
class Support:
    """What backs the top answer among the voters."""

    references: int  # distinct references of the top species among the k voters, copies of the photo left out
    same_photo_as: int | None  # the nearest reference that is the query's own photo, if any
    unreferenced_favourite: str | None  # the classifier's favourite, when no references can speak for it
    contradicting_favourite: str | None = None  # the classifier's favourite, when it strongly names another

    def reasons(self, config: FusionConfig) -> tuple[str, ...]:
        """Why the answer may not be confident, by this module's rules (none: it may)."""
        reasons = []
        if self.references < config.min_support:
            reasons.append(THIN_SUPPORT)
        if self.unreferenced_favourite is not None:
            reasons.append(NAMED_SPECIES_UNREFERENCED)
        elif self.contradicting_favourite is not None:
            reasons.append(CLASSIFIER_NAMES_ANOTHER)
        return tuple(reasons)


def _contains(group: RankedSpecies, species: RankedSpecies) -> bool:
    """Whether `group` is a taxon above `species` (an ImageNet class `toucan` is the genus Ramphastos)."""
    if group.taxon is None or species.taxon is None or group.taxon.rank == "species":
        return False
    return group.taxon.scientific_name in (species.taxon.genus, species.taxon.family, species.taxon.order)


def support_of(ranking: Sequence[RankedSpecies], votes: Sequence[Neighbour],
               reference_counts: Mapping[str, int] | None, config: FusionConfig) -> Support:
    """The top answer's support (see the module). `votes` are nearest first, in the ranking's label space;
    `reference_counts`: references per species of the searched set (None: unknown, the open-set rule is off)."""
    if not ranking:
        return Support(0, None, None)
    top = ranking[0]
    voters = list(votes)[:config.k]
    copies = [v for v in voters if v.similarity >= config.same_photo_similarity]
    copy_ids = {v.reference_id for v in copies}
    backing = {v.reference_id for v in voters if v.species == top.name and v.reference_id not in copy_ids}
    favourite = max(ranking, key=lambda s: s.classifier)
    if _contains(favourite, top):  # the classifier names the answer's genus or family: the same answer, coarser
        return Support(len(backing), copies[0].reference_id if copies else None, None, None)
    unreferenced = None
    if reference_counts is not None and favourite.name != top.name and \
            favourite.classifier >= config.unreferenced_vote and \
            reference_counts.get(favourite.name, 0) < config.min_support:
        unreferenced = favourite.name
    contradicting = favourite.name if favourite.name != top.name and \
        favourite.classifier >= config.contradicting_vote else None
    return Support(len(backing), copies[0].reference_id if copies else None, unreferenced, contradicting)
