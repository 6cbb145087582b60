"""A FAISS index that follows SQL while a server runs.

SQL is the system of record: references a curator adds and sightings other worker processes store are rows
there first. A `LiveIndex` starts from a base (a published index, or nothing) and, at most every
`refresh_seconds`, adds the rows committed since it last looked. Rows this process commits are added at once.
New rows go into a small exact index of their own (the delta) and every search merges the two answers, so
the base is never written: a published index can be memory-mapped read-only and shared by every worker.

Ids come from SQL sequences, which commit out of order under concurrency: row 11 can be visible before row
10 commits. So each refresh reads from LOOKBACK ids below the highest id a refresh has read (not the highest
id in the index: this process's own rows may be far above a burst of other workers' rows it has not read
yet) and adds those it has not seen.

Rows also change after they are added: a curator retires a reference (or restores it). Each refresh asks
`changes_since` whether the reference set's change stamp moved; when it did, it reads the retired ids again.
Searches ask for that many more neighbours and drop the retired ones, so a retirement is exact without
rewriting any index; a restored reference that the published index left out (retired when it was built) is
added to the delta."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from identify.errors import IdentifyError
from identify.vectors import faiss_module, normalised
from identify.vectors.catalog import Manifest
from identify.vectors.published import VectorIndex, no_answers

log = logging.getLogger(__name__)

LOOKBACK = 1000  # ids below the highest seen that may still commit late
GPU_MAX_K = 2048  # the most neighbours a FAISS GPU search returns at once

IdsAfter = Callable[[int], list[int]]  # ids of rows with id > n, ascending
VectorsOf = Callable[[list[int]], tuple[np.ndarray, np.ndarray]]  # (ids, raw vectors) of these rows
# Given the change stamp last seen: None when nothing changed, else (the new stamp, every retired id).
ChangesSince = Callable[[int], "tuple[int, list[int]] | None"]


def empty_index(dim: int) -> Any:
    """An exact inner-product index whose ids are SQL ids."""
    faiss = faiss_module()
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


class LiveIndex:
    """Thread-safe search over `base` plus the rows SQL gained after `floor_id` (the base's newest id)."""

    def __init__(self, base: VectorIndex, floor_id: int, ids_after: IdsAfter, vectors_of: VectorsOf,
                 refresh_seconds: float = 2.0, changes_since: ChangesSince | None = None) -> None:
        self.base = base
        flat = replace(base.manifest, index_type="flat", factory="Flat", nprobe=None, ef_search=None)
        self.delta = VectorIndex(empty_index(base.manifest.dim), flat)  # exact, the rows added after the base
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
        self._changes_since = changes_since
        self.stamp = 0  # the reference set's change stamp as of the last refresh (identify.identifier reads it)
        self._retired = np.empty(0, dtype=np.int64)  # masked out of every search
        self._masked = 0  # how many of them are in the base or the delta
        self._restored: set[int] = set()  # left out of the base when it was built, restored since: in the delta

    @classmethod
    def caught_up(cls, base: VectorIndex, ids_after: IdsAfter, vectors_of: VectorsOf,
                  refresh_seconds: float, changes_since: ChangesSince | None = None) -> "LiveIndex":
        """`base` (a published index) and every row SQL committed after it was built, read now."""
        live = cls(base, base.manifest.max_reference_id, ids_after, vectors_of, refresh_seconds, changes_since)
        live.refresh(force=True)
        return live

    @property
    def count(self) -> int:
        return self.base.count + self.delta.count

    def add(self, ids: Iterable[int], vectors: np.ndarray) -> None:
        """Add rows this process has committed, unless a refresh already brought them."""
        ids = [int(i) for i in ids]
        with self._lock:
            keep = [row for row, i in enumerate(ids) if i not in self._recent and i > self._floor]
            if not keep:
                return
            chosen = np.asarray([ids[row] for row in keep], dtype=np.int64)
            self.delta.index.add_with_ids(normalised(np.asarray(vectors)[keep]), chosen)
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
            before = self.count
            if missing:
                ids, vectors = self._vectors_of(missing)
                self.add(ids, vectors)
            if committed:
                self._synced = max(self._synced, int(committed[-1]))
                self._forget_old()
            self._follow_changes()
            return self.count - before

    def _follow_changes(self) -> None:
        """Retirements and restorations since the last look (under the lock)."""
        changed = self._changes_since(self.stamp) if self._changes_since is not None else None
        if changed is None:
            return
        self.stamp, retired = changed
        self._retired = np.array(sorted(set(retired)), dtype=np.int64)
        restored = sorted(set(self.base.manifest.excluded_ids) - set(retired) - self._restored)
        if restored:
            ids, vectors = self._vectors_of(restored)
            if len(ids):
                self.delta.index.add_with_ids(normalised(np.asarray(vectors)), np.asarray(ids, dtype=np.int64))
                self._restored.update(int(i) for i in ids)
        absent = set(self.base.manifest.excluded_ids) - self._restored  # retired before the base was built
        self._masked = len(set(retired) - absent)

    @property
    def searchable(self) -> int:
        """The vectors a search can return: every one held, less the retired ones masked."""
        return self.count - self._masked

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids), best first; `allowed` restricts the result to those ids (FAISS IDSelector)."""
        self.refresh()
        queries = normalised(queries)
        if allowed is not None:
            allowed = np.ascontiguousarray(allowed, dtype=np.int64)
        with self._lock:
            retired = self._retired
            extra = min(len(retired), max(0, GPU_MAX_K - k))  # enough to keep k after dropping every retired one
            answers = [_search(part, queries, k + extra, allowed) for part in (self.base, self.delta) if part.count]
        if not answers:
            return no_answers(len(queries))
        wanted = min(k, self.count, len(allowed) if allowed is not None else k)
        if not extra:
            return _merged(answers, wanted)
        similarities, ids = _merged(answers, wanted + extra)
        return _first_kept(similarities, ids, (ids >= 0) & ~np.isin(ids, retired), wanted)


class FollowingIndex:
    """The live index of a published index's current version, reopened when a build publishes a newer one.

    Without it a long-lived server searched the version it started with, and took every row of a later build
    into its own exact delta (read from SQL, held in each process): after a rebuild of a million references,
    each worker held a million vectors of its own instead of sharing the new mapped file. It looks at the
    `<name>` link at most every `refresh_seconds`; a version it cannot open (another model, a damaged file) is
    logged and the current one kept."""

    def __init__(self, indexes_dir: Path, name: str, open_live: Callable[[], LiveIndex],
                 refresh_seconds: float = 2.0) -> None:
        self._link = indexes_dir / name
        self._open_live = open_live
        self._refresh_seconds = refresh_seconds
        self._reopening = threading.Lock()
        self._version = self._published_version()  # before opening: a publish in between is seen next time
        self.live = open_live()
        self._checked_at = time.monotonic()

    @property
    def count(self) -> int:
        return self.live.count

    @property
    def manifest(self) -> Manifest:
        return self.live.manifest

    @property
    def stamp(self) -> int:
        return self.live.stamp

    @property
    def searchable(self) -> int:
        return self.live.searchable

    def add(self, ids: Iterable[int], vectors: np.ndarray) -> None:
        self.live.add(ids, vectors)

    def refresh(self, force: bool = False) -> int:
        self._follow(force)
        return self.live.refresh(force)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        self._follow()
        return self.live.search(queries, k, allowed)

    def _published_version(self) -> str | None:
        try:
            return os.readlink(self._link)
        except OSError:  # gone for a moment or for good: keep what is open
            return None

    def _follow(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < self._refresh_seconds:
            return
        if not self._reopening.acquire(blocking=False):  # another thread is reopening it
            return
        try:
            self._checked_at = now
            version = self._published_version()
            if version is None or version == self._version:
                return
            self._version = version  # tried once, whether it opens or not
            try:
                self.live = self._open_live()  # one assignment: searches under way finish on the old one
            except IdentifyError as exc:
                log.warning("index %s: the newly published version %s is not used (%s)", self._link.name,
                            version, exc.message)
        finally:
            self._reopening.release()


def _search(part: VectorIndex, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """One index's k best, restricted to `allowed` when given."""
    if allowed is None:
        return part.search(queries, k)
    k = min(k, part.count, len(allowed))
    if k == 0:
        return no_answers(len(queries))
    kind = part.manifest.index_type
    # HNSW's graph walk stops short of a sparse selection (seen: 1 of 4 found among 5 allowed ids of 3,000), and
    # a re-ranking layer (IVF-PQ) takes no selector.
    if not part.honours_selectors or kind == "hnsw" or part.manifest.reranks:
        return _filtered_search(part, queries, k, allowed)
    faiss = faiss_module()
    selector = faiss.IDSelectorBatch(allowed)
    # An IVF index refuses plain SearchParameters, and its own would reset nprobe to 1 unless given.
    params = faiss.SearchParametersIVF(sel=selector, nprobe=_restricted_nprobe(part, len(allowed))) \
        if kind.startswith("ivf") else faiss.SearchParameters(sel=selector)
    return part.index.search(queries, k, params=params)


def _restricted_nprobe(part: VectorIndex, allowed: int) -> int:
    """The lists a restricted IVF search visits: the tuned nprobe scaled by how rare the selection is, so that
    it meets as many allowed vectors as an unrestricted search meets vectors (the tuned nprobe alone found 3.5%
    of the 10 nearest among 20 allowed ids of 20,000). A selection rare enough visits every list: exact among
    it."""
    nlist = int(faiss_module().extract_index_ivf(part.index).nlist)
    nprobe = part.manifest.nprobe or 1
    return min(nlist, -(-nprobe * part.count // max(allowed, 1)))


def _merged(answers: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of several indexes' answers, best first (-1 ids, as FAISS pads, sort last)."""
    if len(answers) == 1:
        return answers[0][0][:, :k], answers[0][1][:, :k]
    similarities = np.concatenate([s for s, _ in answers], axis=1)
    ids = np.concatenate([i for _, i in answers], axis=1)
    order = np.argsort(-np.where(ids >= 0, similarities, -np.inf), axis=1, kind="stable")[:, :k]
    return np.take_along_axis(similarities, order, axis=1), np.take_along_axis(ids, order, axis=1)


def _filtered_search(base: VectorIndex, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A restricted search of an index that ignores IDSelectors (a GPU copy) or walks past them (HNSW): more
    neighbours than asked, keeping the allowed ones, widening up to what one GPU search returns; past that (a
    selection too rare among the neighbours), exact similarities to the allowed vectors themselves."""
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
    vectors = base.index.reconstruct_batch(present) if len(present) else \
        np.empty((0, base.manifest.dim), dtype=np.float32)
    similarities = queries @ vectors.T
    order = np.argsort(-similarities, axis=1, kind="stable")[:, :k]
    return _first_kept(np.take_along_axis(similarities, order, axis=1), present[order], np.ones(order.shape, bool), k)
