"""Roll-up: when no species is sure enough, sum the calibrated scores up the taxonomy (genus, then family,
then order) and offer the lowest taxon whose sum clears the bar, as iNaturalist (0.78) and SpeciesNet (0.65)
do. "Probably a sparrow (genus Passer), 0.93": the sighting still goes to a curator, with this as the
suggestion. Pure functions: the caller supplies the ranking (with taxa) and how groups are called."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from identify.fusion import RankedSpecies

RANKS = ("genus", "family", "order")
GroupName = Callable[[str, str], "str | None"]  # (rank, scientific name) -> "sparrow", or None


@dataclass(frozen=True)
class RollUp:
    rank: str  # genus, family or order
    scientific_name: str
    common_name: str | None  # what its birds are called ("sparrow"), when they share a name
    score: float  # the summed calibrated score
    members: tuple[str, ...]  # the species labels summed, best first

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "scientific_name": self.scientific_name, "common_name": self.common_name,
                "score": round(self.score, 6), "members": list(self.members)}

    @property
    def text(self) -> str:
        """"Probably a sparrow (genus Passer)": how a page says it."""
        what = f"{'an' if (self.common_name or '')[:1] in 'aeiou' else 'a'} {self.common_name}" \
            if self.common_name else f"a bird of the {self.rank} {self.scientific_name}"
        return f"Probably {what} ({self.rank} {self.scientific_name})" if self.common_name else f"Probably {what}"


def roll_up(ranking: Sequence[RankedSpecies], bar: float, group_name: GroupName | None = None) -> RollUp | None:
    """The lowest taxon above species whose members' scores sum to at least `bar`, or None. Species without a
    taxon take part in no group."""
    for rank in RANKS:
        sums: dict[str, float] = {}
        members: dict[str, list[str]] = {}
        for species in ranking:
            group = getattr(species.taxon, rank, None) if species.taxon is not None else None
            if group:
                sums[group] = sums.get(group, 0.0) + species.score
                members.setdefault(group, []).append(species.name)
        if not sums:
            continue
        best = max(sums, key=lambda g: (sums[g], g))
        if sums[best] >= bar and len(members[best]) > 1:  # one member would be the species itself
            return RollUp(rank, best, group_name(rank, best) if group_name else None, sums[best],
                          tuple(members[best]))
    return None
