"""Roll-up: the taxa above species, each with the sum of its members' calibrated scores (genus, then family,
then order).

Two uses, one sum:
- **the rank that holds** (`certified_rank`): when the species cannot be certified, the most specific taxon whose
  own threshold, chosen for its rank by the same risk control as the species' (identify.risk.rank_controls), its
  sum clears. The answer stays `confident`, with its rank beside it: "a Sylvia warbler (genus Sylvia)";
- **a suggestion** (`roll_up`): where no rank is certified (an uncalibrated deployment), the lowest taxon whose
  sum clears a bar, as iNaturalist (0.78) and SpeciesNet (0.65) do: "Probably a sparrow (genus Passer)", and the
  sighting still goes to a curator, with this as the hint.
Pure functions: the caller supplies the ranking (with taxa), the thresholds and how groups are called."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

from identify.fusion import RankedSpecies
from identify.taxonomy import Taxon

RANKS = ("genus", "family", "order")
RANK_GROUP = "rank:"  # a rank's threshold is kept with the species' groups: "rank:genus" (photo alone only)
GroupName = Callable[[str, str], "str | None"]  # (rank, scientific name) -> "sparrow", or None
RankThreshold = Callable[[str], "float | None"]  # rank -> its certified threshold, or None: not certified


@dataclass(frozen=True)
class RollUp:
    rank: str  # genus, family or order
    scientific_name: str
    common_name: str | None  # what its birds are called ("sparrow"), when they share a name
    score: float  # the summed calibrated score
    members: tuple[str, ...]  # the species labels summed, best first
    certified: bool = False  # the answer at this rank is `confident`: its rank's own threshold holds
    family: str | None = None  # the taxa above it, from its best member's (a record at genus names its family)
    order: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "scientific_name": self.scientific_name, "common_name": self.common_name,
                "score": round(self.score, 6), "members": list(self.members), "certified": self.certified,
                "family": self.family, "order": self.order}

    @property
    def text(self) -> str:
        """"Probably a sparrow (genus Passer)", or for a certified rank "A sparrow (genus Passer)": how a page
        says it."""
        what = f"{'an' if (self.common_name or '')[:1] in 'aeiou' else 'a'} {self.common_name}" \
            if self.common_name else f"a bird of the {self.rank} {self.scientific_name}"
        said = f"{what} ({self.rank} {self.scientific_name})" if self.common_name else what
        return said[:1].upper() + said[1:] if self.certified else f"Probably {said}"


def best_taxon(ranking: Sequence[RankedSpecies], rank: str) -> RollUp | None:
    """The taxon of `rank` whose members' scores sum highest (ties: by name), or None when no species of the
    ranking has a taxon. Species without a taxon take part in no group."""
    sums: dict[str, float] = {}
    members: dict[str, list[RankedSpecies]] = {}
    for species in ranking:
        group = getattr(species.taxon, rank, None) if species.taxon is not None else None
        if group:
            sums[group] = sums.get(group, 0.0) + species.score
            members.setdefault(group, []).append(species)
    if not sums:
        return None
    best = max(sums, key=lambda g: (sums[g], g))
    lineage = members[best][0].taxon
    return RollUp(rank, best, None, sums[best], tuple(s.name for s in members[best]),
                  family=lineage.family if lineage is not None and rank == "genus" else None,
                  order=lineage.order if lineage is not None and rank != "order" else None)


def roll_up(ranking: Sequence[RankedSpecies], bar: float, group_name: GroupName | None = None) -> RollUp | None:
    """The suggestion: the lowest taxon above species whose members' scores sum to at least `bar`, or None."""
    for rank in RANKS:
        best = best_taxon(ranking, rank)
        if best is not None and best.score >= bar and len(best.members) > 1:  # one member: the species itself
            return _named(best, group_name)
    return None


def certified_rank(by_rank: Sequence[RollUp | None], threshold_of: RankThreshold,
                   group_name: GroupName | None = None) -> RollUp | None:
    """Of the best taxon at each of RANKS (`by_rank`, best_taxon's), the most specific whose rank's certified
    threshold its sum clears, as a certified RollUp; None when none does. A taxon of one member counts: "genus
    Passer" is the right answer for a sparrow whose own species has no references, where naming the one Passer
    that has them would be wrong."""
    for rank, best in zip(RANKS, by_rank, strict=True):
        bar = threshold_of(rank)
        if best is not None and bar is not None and best.score >= bar:
            return replace(_named(best, group_name), certified=True)
    return None


def _named(rolled: RollUp, group_name: GroupName | None) -> RollUp:
    return replace(rolled, common_name=group_name(rolled.rank, rolled.scientific_name) if group_name else None)


def rank_taxon(rollup: Mapping[str, Any] | None) -> Taxon | None:
    """The taxon an answer is confident at when that is above species (a certified roll-up, as JSON), with the
    taxa above it; None otherwise."""
    if not rollup or not rollup.get("certified"):
        return None
    rank, name = rollup["rank"], rollup["scientific_name"]
    return Taxon(name, None, rank, name if rank == "genus" else None,
                 name if rank == "family" else rollup.get("family"), name if rank == "order" else rollup.get("order"),
                 "", "")


def answered_taxon(status: str, decision: str, rollup: Mapping[str, Any] | None) -> Taxon | None:
    """The taxon a stored sighting is answered as when that is above species: open, confident, and its roll-up
    certified; None otherwise (it is answered as its species). What pages, lists and Darwin Core name."""
    return rank_taxon(rollup) if status == "open" and decision == "confident" else None
