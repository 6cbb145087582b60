"""A FAISS index that follows SQL while a server runs.

SQL is the system of record: references a curator adds and sightings other worker processes store are rows
there first. A `LiveIndex` starts from a base (a published index, or nothing) and, at most every
`refresh_seconds`, adds the rows committed since it last looked. Rows this process commits are added at once.

Ids come from SQL sequences, which commit out of order under concurrency: row 11 can be visible before row
10 commits. So each refresh reads from LOOKBACK ids below the highest id a refresh has read (not the highest
id in the index: this process's own rows may be far above a burst of other workers' rows it has not read
yet) and adds those it has not seen."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable

import numpy as np

from identify.vectors import faiss_module, normalised
from identify.vectors.catalog import Manifest
from identify.vectors.published import VectorIndex

LOOKBACK = 1000  # ids below the highest seen that may still commit late
GPU_MAX_K = 2048  # the most neighbours a FAISS GPU search returns at once

IdsAfter = Callable[[int], list[int]]  # ids of rows with id > n, ascending
VectorsOf = Callable[[list[int]], tuple[np.ndarray, np.ndarray]]  # (ids, raw vectors) of these rows


def empty_index(dim: int) -> Any:
    """An exact inner-product index whose ids are SQL ids."""
    faiss = faiss_module()
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


class LiveIndex:
    """Thread-safe search over `base` plus the rows SQL gained after `floor_id` (the base's newest id)."""

    def __init__(self, base: VectorIndex, floor_id: int, ids_after: IdsAfter, vectors_of: VectorsOf,
                 refresh_seconds: float = 2.0) -> None:
        self.base = base
        self.manifest: Manifest = base.manifest
        self._floor = floor_id
        self._high = floor_id  # the highest id in the index, whoever added it
        # The highest id a refresh has read from SQL: every id below it that had committed then was read. Rows
        # this process adds itself do not move it, so a burst of other workers' rows below one of ours is
        # still fetched (the look-back only covers rows that commit late, out of id order).
        self._synced = floor_id
        self._recent: set[int] = set()  # ids above the look-back line that are in the index
        self._ids_after = ids_after
        self._vectors_of = vectors_of
        self._refresh_seconds = refresh_seconds
        self._refreshed_at = float("-inf")
        self._lock = threading.RLock()

    @property
    def count(self) -> int:
        return self.base.count

    def add(self, ids: Iterable[int], vectors: np.ndarray) -> None:
        """Add rows this process has committed, unless a refresh already brought them."""
        ids = [int(i) for i in ids]
        with self._lock:
            keep = [row for row, i in enumerate(ids) if i not in self._recent and i > self._floor]
            if not keep:
                return
            chosen = np.asarray([ids[row] for row in keep], dtype=np.int64)
            self.base.index.add_with_ids(normalised(np.asarray(vectors)[keep]), chosen)
            self._recent.update(int(i) for i in chosen)
            self._high = max(self._high, int(chosen.max()))
            self._forget_old()

    def _forget_old(self) -> None:
        line = min(self._high, self._synced) - LOOKBACK  # no refresh looks at ids this low again
        if len(self._recent) > 2 * LOOKBACK:
            self._recent = {i for i in self._recent if i > line}

    def refresh(self, force: bool = False) -> int:
        """Add rows committed by any process since the last look; returns how many were added."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._refreshed_at < self._refresh_seconds:
                return 0
            self._refreshed_at = now
            start = max(self._floor, self._synced - LOOKBACK)
            committed = self._ids_after(start)
            missing = [i for i in committed if i not in self._recent]
            before = self.base.count
            if missing:
                ids, vectors = self._vectors_of(missing)
                self.add(ids, vectors)
            if committed:
                self._synced = max(self._synced, int(committed[-1]))
                self._forget_old()
            return self.base.count - before

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids), best first; `allowed` restricts the result to those ids (FAISS IDSelector)."""
        self.refresh()
        with self._lock:
            if allowed is None:
                return self.base.search(queries, k)
            n = len(queries)
            allowed = np.ascontiguousarray(allowed, dtype=np.int64)
            k = min(k, self.base.count, len(allowed))
            if k == 0:
                return np.empty((n, 0), dtype=np.float32), np.empty((n, 0), dtype=np.int64)
            if not self.base.honours_selectors:
                return _filtered_search(self.base, normalised(queries), k, allowed)
            faiss = faiss_module()
            selector = faiss.IDSelectorBatch(allowed)
            return self.base.index.search(normalised(queries), k, params=faiss.SearchParameters(sel=selector))


def _filtered_search(base: VectorIndex, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A restricted search of an index that ignores IDSelectors (a GPU copy): more neighbours than asked, keeping
    the allowed ones, widening up to what one GPU search returns; past that (a selection too rare among the
    neighbours), exact similarities to the allowed vectors themselves."""
    fetch = min(base.count, GPU_MAX_K, max(4 * k, k * base.count // len(allowed)))
    while True:
        similarities, ids = base.index.search(queries, fetch)
        keep = np.isin(ids, allowed) & (ids >= 0)
        if keep.sum(axis=1).min() >= k or fetch == base.count:
            return _first_kept(similarities, ids, keep, k)
        if fetch == min(base.count, GPU_MAX_K):
            return _exact_among(base, queries, k, allowed)
        fetch = min(base.count, GPU_MAX_K, 4 * fetch)


def _first_kept(similarities: np.ndarray, ids: np.ndarray, keep: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query row, the first k kept answers, padded as FAISS pads (-1 ids, -inf similarities)."""
    out_similarities = np.full((len(ids), k), -np.inf, dtype=np.float32)
    out_ids = np.full((len(ids), k), -1, dtype=np.int64)
    for row in range(len(ids)):
        chosen = np.flatnonzero(keep[row])[:k]
        out_similarities[row, : len(chosen)] = similarities[row, chosen]
        out_ids[row, : len(chosen)] = ids[row, chosen]
    return out_similarities, out_ids


def _exact_among(base: VectorIndex, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner products with the allowed vectors that are in the index (read back from it)."""
    faiss = faiss_module()
    present = allowed[np.isin(allowed, faiss.vector_to_array(base.index.id_map))]
    vectors = np.stack([base.index.reconstruct(int(i)) for i in present]) if len(present) else \
        np.empty((0, base.manifest.dim), dtype=np.float32)
    similarities = queries @ vectors.T
    order = np.argsort(-similarities, axis=1, kind="stable")[:, :k]
    return _first_kept(np.take_along_axis(similarities, order, axis=1), present[order], np.ones(order.shape, bool), k)
