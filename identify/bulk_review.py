"""Review in bulk: open sightings that look alike and share the top answer, grouped, so that a curator confirms
or corrects a burst of one bird, or one flock, in one action.

A group is a connected set of open, uncertain sightings (audits and answers awaiting a second curator left out:
each of those needs its own look) with the same current answer whose embeddings are at `group_similarity` or
closer (the similarity floor, ServiceConfig.group_similarity), among the most uncertain MAX_GROUPED of the
queue. Acting on a group still reviews each member on its own, through identify.reviews with the version the
curator saw: a member someone reviewed meanwhile fails alone (409) and the others go through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from identify.errors import IdentifyError
from identify.reviews import ReviewOutcome, ReviewRequest
from identify.sightings import SightingRecord
from identify.vectors.plan import close_pairs, exact_knn, linked_groups

MAX_GROUPED = 1000  # open sightings looked at, most uncertain first
NEIGHBOURS = 20  # each sighting's nearest others looked at; chains join the rest


@dataclass(frozen=True)
class ReviewGroup:
    answer: str  # the members' shared current answer (a label)
    members: list[SightingRecord]  # most uncertain first


@dataclass(frozen=True)
class MemberResult:
    public_id: str
    outcome: ReviewOutcome | None
    error: IdentifyError | None


def review_groups(records: Sequence[SightingRecord], embedding_of: Callable[[int], np.ndarray],
                  floor: float) -> list[ReviewGroup]:
    """Groups of two or more among these queue records (see the module), biggest first."""
    candidates = [r for r in records if r.status == "open" and not r.audit and r.species]
    if len(candidates) < 2:
        return []
    vectors = np.stack([embedding_of(r.id) for r in candidates]).astype(np.float32)
    alike = close_pairs(*exact_knn(vectors, vectors, min(NEIGHBOURS + 1, len(candidates))), floor)
    _, labels = linked_groups(len(candidates), [(a, b) for a, b, _ in alike
                                                if candidates[a].species == candidates[b].species])
    groups: dict[int, list[SightingRecord]] = {}
    for record, label in zip(candidates, labels, strict=True):
        groups.setdefault(int(label), []).append(record)
    found = [ReviewGroup(members[0].species or "", members) for members in groups.values() if len(members) > 1]
    return sorted(found, key=lambda g: (-len(g.members), -g.members[0].uncertainty))


def review_members(review: Callable[[ReviewRequest], ReviewOutcome], requests: Sequence[tuple[str, ReviewRequest]]
                   ) -> list[MemberResult]:
    """Each member's review on its own (its own version check and transaction); a failure stays its own."""
    results = []
    for public_id, request in requests:
        try:
            results.append(MemberResult(public_id, review(request), None))
        except IdentifyError as exc:
            if exc.status >= 500:  # a fault (the database went away): the rest would fail the same way
                raise
            results.append(MemberResult(public_id, None, exc))
    return results


def result_json(result: MemberResult, sighting_json: Callable[[SightingRecord], dict[str, Any]]) -> dict[str, Any]:
    if result.error is not None:
        return {"sighting_id": result.public_id, "status": result.error.status,
                "error": {"code": result.error.code, "message": result.error.message}}
    assert result.outcome is not None
    return {"sighting_id": result.public_id, "status": 200, "sighting": sighting_json(result.outcome.sighting),
            "reference_id": result.outcome.reference_id, "second_opinion": result.outcome.second_opinion,
            "single_curator": result.outcome.single_curator}
