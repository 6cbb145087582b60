"""A health check of the reference set: what a curator should look at before the references mislead answers.

- **Likely mislabelled**: references whose neighbours (and, when given, the classifier) disagree with their
  label. Each reference gets out-of-sample predicted probabilities: the similarity-weighted vote of its k
  nearest other references (leave-one-out, the service's own kNN vote: exp((s - 1) / T)), averaged with the
  classifier's probabilities of its photo where those are known. cleanlab's Confident Learning
  (`cleanlab.filter.find_label_issues`) picks the label issues from them; each comes with the species the
  evidence names and cleanlab's label quality score (lowest first).
- **Near-duplicates under different species**: two references at `same_photo_similarity` or closer (the
  similarity at which the service calls an upload a reference's own photo) with different labels: one photo
  filed under two species through near-copies.
- **Thin species**: species with fewer than `min_references` active references (an answer for them can never be
  confident: identify.openset needs several distinct references).
- **Confused pairs**: the label pairs the leave-one-out nearest neighbour confuses most, with how often.

Everything is computed on the active references of one index under one model, from their stored embeddings;
nothing is changed. Each entry names references by their public ids, for the pages' and the API's relabel and
retire."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from identify.vectors.plan import close_pairs, exact_knn

MIN_REFERENCES = 3  # fewer: thin (the open-set rule needs two distinct ones; a third is a margin)
CONFUSED_PAIRS = 10


@dataclass(frozen=True)
class Mislabel:
    id: str
    species: str
    suggested: str  # what the neighbours (and classifier) name
    quality: float  # cleanlab's label quality score: lower is likelier wrong
    agreeing: int  # of the k neighbours, how many share its label


@dataclass(frozen=True)
class NearDuplicate:
    a: str
    b: str
    species_a: str
    species_b: str
    similarity: float


@dataclass
class HealthReport:
    references: int
    species: int
    k: int
    mislabelled: list[Mislabel] = field(default_factory=list)
    near_duplicates: list[NearDuplicate] = field(default_factory=list)
    thin_species: dict[str, int] = field(default_factory=dict)
    confused_pairs: list[dict[str, Any]] = field(default_factory=list)
    classifier: bool = False  # whether the classifier's probabilities were part of the evidence

    def flagged(self, flag: str, public_ids: Sequence[str], labels: Sequence[str]) -> frozenset[str]:
        """The public ids listed under a flag: mislabelled, near_duplicate (both of each pair) or thin (every
        reference of a thin species; `public_ids` and `labels` are the references checked)."""
        if flag == "mislabelled":
            return frozenset(m.id for m in self.mislabelled)
        if flag == "near_duplicate":
            return frozenset(i for d in self.near_duplicates for i in (d.a, d.b))
        return frozenset(i for i, label in zip(public_ids, labels, strict=True) if label in self.thin_species)

    def to_dict(self) -> dict[str, Any]:
        return {"references": self.references, "species": self.species, "k": self.k, "classifier": self.classifier,
                "mislabelled": [asdict(m) for m in self.mislabelled],
                "near_duplicates": [asdict(d) for d in self.near_duplicates],
                "thin_species": self.thin_species, "confused_pairs": self.confused_pairs,
                "method": "leave-one-out kNN vote (and the classifier, when given); cleanlab find_label_issues"}


def check_references(public_ids: Sequence[str], vectors: np.ndarray, labels: Sequence[str], k: int = 10,
                     temperature: float = 0.1, same_photo_similarity: float = 0.97,
                     min_references: int = MIN_REFERENCES,
                     classifier: np.ndarray | None = None, classes: Sequence[str] = ()) -> HealthReport:
    """The report for these references (see the module). `classifier`: (references, classes) probabilities of
    each reference photo, over `classes`, or None."""
    names = sorted(set(labels))
    column = {name: i for i, name in enumerate(names)}
    given = np.array([column[label] for label in labels], dtype=int)
    counts = Counter(labels)
    report = HealthReport(len(labels), len(names), k, classifier=classifier is not None,
                          thin_species={n: c for n, c in sorted(counts.items()) if c < min_references})
    if len(labels) < 2:
        return report
    similarities, neighbours = exact_knn(vectors.astype(np.float32), vectors.astype(np.float32),
                                         min(k + 1, len(labels)))
    votes, nearest = _leave_one_out(similarities, neighbours, given, len(names), temperature)
    report.near_duplicates = _near_duplicates(similarities, neighbours, public_ids, labels, same_photo_similarity)
    report.confused_pairs = _confused(given, nearest, names)
    evidence = votes if classifier is None else 0.5 * votes + 0.5 * _in_columns(classifier, classes, column)
    report.mislabelled = _label_issues(evidence, given, neighbours, public_ids, names)
    return report


def _leave_one_out(similarities: np.ndarray, neighbours: np.ndarray, given: np.ndarray, species: int,
                   temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Each reference's kNN vote over the species from its neighbours but itself, and its nearest other's label."""
    votes = np.full((len(given), species), 1e-9)
    nearest = np.full(len(given), -1)
    for row in range(len(given)):
        for similarity, other in zip(similarities[row], neighbours[row], strict=True):
            if other < 0 or other == row:
                continue
            if nearest[row] < 0:
                nearest[row] = given[other]
            votes[row, given[other]] += np.exp((similarity - 1.0) / temperature)
    return votes / votes.sum(axis=1, keepdims=True), nearest


def _in_columns(probabilities: np.ndarray, classes: Sequence[str], column: dict[str, int]) -> np.ndarray:
    """Classifier probabilities in the references' label columns (classes no reference has are left out; a row
    with none of its mass left is spread evenly: the classifier then says nothing)."""
    out = np.zeros((len(probabilities), len(column)))
    for j, name in enumerate(classes):
        if name in column:
            out[:, column[name]] += probabilities[:, j]
    mass = out.sum(axis=1, keepdims=True)
    return np.where(mass > 1e-9, out / np.maximum(mass, 1e-9), 1.0 / len(column))


def _label_issues(evidence: np.ndarray, given: np.ndarray, neighbours: np.ndarray, public_ids: Sequence[str],
                  names: list[str]) -> list[Mislabel]:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    if len(names) < 2:
        return []
    evidence = evidence / evidence.sum(axis=1, keepdims=True)
    with warnings.catch_warnings():  # a species with too few references to judge: listed as thin instead
        warnings.simplefilter("ignore", UserWarning)
        issues = find_label_issues(given, evidence, n_jobs=1)  # no worker processes: in a server worker they hang
    quality = get_label_quality_scores(given, evidence)
    found = []
    for row in (int(r) for r in np.flatnonzero(issues)):
        others = [o for o in neighbours[row] if o >= 0 and o != row]
        found.append(Mislabel(public_ids[row], names[given[row]], names[int(evidence[row].argmax())],
                              round(float(quality[row]), 6), int(sum(given[o] == given[row] for o in others))))
    return sorted(found, key=lambda m: m.quality)


def _near_duplicates(similarities: np.ndarray, neighbours: np.ndarray, public_ids: Sequence[str],
                     labels: Sequence[str], threshold: float) -> list[NearDuplicate]:
    pairs = {}
    for row, other, similarity in close_pairs(similarities, neighbours, threshold):
        if labels[other] != labels[row]:
            a, b = sorted((row, other))
            pairs[(a, b)] = NearDuplicate(public_ids[a], public_ids[b], labels[a], labels[b], round(similarity, 6))
    return sorted(pairs.values(), key=lambda d: -d.similarity)


def _confused(given: np.ndarray, nearest: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    """Label pairs by how often one's references have the other's nearest (both directions together)."""
    confusions = Counter(tuple(sorted((int(g), int(n)))) for g, n in zip(given, nearest, strict=True)
                         if n >= 0 and n != g)
    per_species = Counter(given.tolist())
    return [{"a": names[a], "b": names[b], "count": count, "share": round(count / (per_species[a] + per_species[b]), 4)}
            for (a, b), count in confusions.most_common(CONFUSED_PAIRS)]


@dataclass(frozen=True)
class ReferenceSet:
    """The active references of one index as its model embedded them."""

    ids: np.ndarray  # SQL keys, in id order
    public_ids: list[str]
    labels: list[str]
    vectors: np.ndarray
    paths: list[str]
    canonical: list[str] = field(default_factory=list)  # the labels as answers name them (filled by the caller)


def reference_set(references: Any, index_name: str) -> ReferenceSet:
    """Read the active members of `index_name` (identify.references.References) under the index's own model."""
    from sqlalchemy import select

    from identify.errors import IdentifyError
    from identify.schema import Index, Model

    with references.store.session() as session:
        row = session.execute(select(Index.id, Index.model_id, Model.embedding_dim)
                              .join(Model, Model.id == Index.model_id).where(Index.name == index_name)).first()
    if row is None:
        raise IdentifyError("unknown_index", f"no index named {index_name!r}", 404)
    index_id, model_id, dim = row
    ids, vectors = references.index_vectors(index_id, model_id, dim)
    known = references.info(int(i) for i in ids)
    return ReferenceSet(ids, [known[int(i)].public_id for i in ids], [known[int(i)].species for i in ids], vectors,
                        [known[int(i)].path for i in ids])


def check_reference_set(chosen: ReferenceSet, canonical: Callable[[str], str], fusion: Any,
                        min_references: int = MIN_REFERENCES, classifier: np.ndarray | None = None,
                        classes: Sequence[str] = ()) -> tuple[HealthReport, ReferenceSet]:
    """`check_references` of a reference set by its labels as answers name them (`canonical`), with the
    service's kNN settings (FusionConfig: at least 5 neighbours); returns the set with its `canonical` labels."""
    chosen = replace(chosen, canonical=[canonical(label) for label in chosen.labels])
    report = check_references(chosen.public_ids, chosen.vectors, chosen.canonical, k=max(fusion.k, 5),
                              temperature=fusion.temperature, same_photo_similarity=fusion.same_photo_similarity,
                              min_references=min_references, classifier=classifier,
                              classes=[canonical(c) for c in classes])
    return report, chosen
