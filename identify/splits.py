"""evaluate's held-out splits: tuning, calibration and test, stratified by species, with every group of
queries kept whole on one side.

A group is one individual, or one source: photos of one bird, or one burst, or one photographer's visit, are
not independent evidence, and a split that puts some of them in the calibration split and the rest in the test
split measures the threshold on photos it was chosen on. Groups come from
- the query CSV's `group` column (or, in the folder layout, a sub-folder of a species folder), and
- near-duplicates, always: two queries at `same_photo_similarity` or closer (the similarity at which the
  service says an upload is a reference's own photo) are one group, and groups joined through them are one.
Species are stratified over groups as far as groups allow (scikit-learn's StratifiedGroupKFold: a species
photographed as one individual lands on one side, and its figures say so). Without groups or duplicates every
query is its own group and the split is a plain stratified one."""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any, Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from identify.vectors.plan import close_pairs, exact_knn, linked_groups

# tuning, calibration, test. The calibration split is the largest: each risk group's threshold is chosen on its
# share of it (identify.risk); the tuning split's three settings and calibrator need fewer (0.4/0.3/0.3 left
# the simulation's groups 10 points less coverage at the same bound).
SPLITS = (0.3, 0.4, 0.3)
FOLDS = 10  # 3 + 4 + 3 of them
DUPLICATE_NEIGHBOURS = 10  # each query's nearest other queries looked at for copies; chains join the rest


def query_groups(embeddings: np.ndarray, declared: Sequence[str | None] | None,
                 same_photo_similarity: float) -> tuple[np.ndarray, dict[str, Any]]:
    """A group number per query (declared groups joined with near-duplicates), and what was found."""
    count = len(embeddings)
    named: dict[str, int] = {}
    links = [(row, named.setdefault(group, row))  # every member joined to the group's first query
             for row, group in enumerate(declared or ()) if group]
    copies: list[tuple[int, int, float]] = []
    if count > 1:
        vectors = embeddings.astype(np.float32)
        copies = close_pairs(*exact_knn(vectors, vectors, DUPLICATE_NEIGHBOURS + 1), same_photo_similarity)
    found, labels = linked_groups(count, links + [(a, b) for a, b, _ in copies])
    duplicates = len(copies)
    return labels, {"groups": found, "declared_groups": len(named), "near_duplicate_links": duplicates,
                    "same_photo_similarity": same_photo_similarity}


def split_queries(labels: Sequence[str], seed: int,
                  groups: Sequence[int] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tuning, calibration and test rows, stratified by species, each group on one side: scikit-learn's
    StratifiedGroupKFold into FOLDS folds (fewer with fewer groups), dealt to the splits by their shares."""
    group_of = np.arange(len(labels)) if groups is None else np.asarray(groups)
    folds = min(FOLDS, len(set(group_of.tolist())))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a species with fewer groups than folds cannot be in every fold: expected
        warnings.simplefilter("ignore", UserWarning)
        # with no species in as many queries as folds there is nothing to stratify: groups are dealt evenly
        strata = list(labels) if max(Counter(labels).values(), default=0) >= folds else [""] * len(labels)
        held = [rows for _, rows in splitter.split(np.zeros(len(labels)), strata, group_of)]
    first, second = (int(cut) for cut in np.round(np.cumsum(SPLITS)[:-1] * folds))
    return tuple(np.sort(np.concatenate([np.empty(0, dtype=int), *chunk])).astype(int)  # type: ignore[return-value]
                 for chunk in (held[:first], held[first:second], held[second:]))


def separable(groups: np.ndarray) -> bool:
    """Enough groups to hold any out: one per fold."""
    return len(set(groups.tolist())) >= FOLDS
