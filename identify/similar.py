"""The similar-sightings index of one model: a snapshot published through the index planner, plus the
sightings stored since it (a LiveIndex's exact delta).

A server used to rebuild this index from every sighting's embedding in SQL at each start, exact, held whole by
every worker. Now the sightings up to a cut are built into a published snapshot (flat, IVF, or IVF-PQ under a
memory budget, as `build-index` plans a reference index); a server maps it read-only, so workers share one copy,
and reads from SQL only the sightings stored after the cut. When those grow past `snapshot_rows`, one process
(a file lock) publishes a new snapshot in a background thread; every process switches to it within
`refresh_seconds`, as to a reference index that a build publishes. `identify index-sightings` does the same
on demand (from cron, or before a deployment).

    <indexes>/.sightings/similar-<model sha256[:16]>   the current snapshot (publish's layout: link + versions)

SQL stays the system of record: a lost or unreadable snapshot costs one full read at the next start, no data."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from identify.errors import IdentifyError
from identify.identity import ModelIdentity
from identify.locks import exclusive_lock
from identify.vectors.catalog import Manifest, read_manifest
from identify.vectors.live import FollowingIndex, LiveIndex, empty_index
from identify.vectors.plan import IndexPlan, build_planned_index
from identify.vectors.published import VectorIndex, check_compatible, load_index, new_manifest, publish

if TYPE_CHECKING:
    from identify.sightings import SightingStore

log = logging.getLogger(__name__)

SNAPSHOTS_DIR = ".sightings"  # hidden: `identify indexes` lists the reference indexes people build
SETTLE_SECONDS = 60.0  # a sighting stored this long ago has committed (or never will)
RECHECK_SECONDS = 60.0  # how often a process with a large delta looks for another process's newer snapshot


def snapshot_name(identity: ModelIdentity) -> str:
    """One snapshot per model: another model's vectors live in another space."""
    return f"similar-{identity.sha256[:16]}"


class SimilarSightings:
    """Search, add and snapshot the similar-sightings index of `identity`'s sightings (ids are sighting ids)."""

    def __init__(self, indexes_dir: Path, identity: ModelIdentity, model_id: int, sightings: "SightingStore",
                 refresh_seconds: float, snapshot_rows: int = 20_000, memory_budget: int | None = None,
                 settle_seconds: float | None = None) -> None:
        self.directory = indexes_dir / SNAPSHOTS_DIR
        self.name = snapshot_name(identity)
        self.identity = identity
        self.model_id = model_id
        self.sightings = sightings
        self.refresh_seconds = refresh_seconds
        self.snapshot_rows = snapshot_rows  # 0: only `identify index-sightings` publishes snapshots
        self.memory_budget = memory_budget
        # Ids commit out of id order (see identify.vectors.live), and a sighting below the cut that had not
        # committed when the snapshot read SQL would be in neither part. A snapshot takes only sightings stored
        # `settle_seconds` ago or more (one short transaction each), leaving the newest to the delta.
        self.settle_seconds = SETTLE_SECONDS if settle_seconds is None else settle_seconds
        self._building = threading.Lock()
        self._checked_at = float("-inf")
        # Follows the snapshot's link: a snapshot another process publishes is searched here within
        # refresh_seconds, like a reference index a build publishes.
        self.index = FollowingIndex(self.directory, self.name, self._open, refresh_seconds)

    @property
    def live(self) -> LiveIndex:
        """The snapshot being searched and the sightings after it."""
        return self.index.live

    # ---- serving -----------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k, allowed)

    @property
    def count(self) -> int:
        return self.live.count

    def refresh(self, force: bool = False) -> int:
        """Take in the sightings other processes stored (see LiveIndex.refresh)."""
        return self.index.refresh(force)

    def add(self, ids: list[int], vectors: np.ndarray) -> None:
        """A sighting this process has committed: searchable at once; a snapshot is published once it is due."""
        self.index.add(ids, vectors)
        self.snapshot_if_due()

    @property
    def floor(self) -> int:
        """The newest sighting id in the snapshot being searched (0 without one)."""
        return self.live.base.manifest.max_reference_id

    def _open(self) -> LiveIndex:
        """The published snapshot (memory-mapped) and the sightings after it, read from SQL."""
        base = self._published()
        dim = self.identity.embedding_dim
        if base is None:
            base = VectorIndex(empty_index(dim), new_manifest(self.identity, IndexPlan("flat", "Flat"), 0, 0))
        return LiveIndex.caught_up(base, ids_after=lambda after: self.sightings.ids_after(self.model_id, after),
                                   vectors_of=lambda ids: self.sightings.vectors(ids, dim),
                                   refresh_seconds=self.refresh_seconds)

    def _published(self) -> VectorIndex | None:
        """The current snapshot, or None when there is none or it cannot be used (then SQL has it all)."""
        if read_manifest(self.directory, self.name) is None:
            return None
        try:
            index = load_index(self.directory, self.name, mapped=True)  # similar searches stay on the CPU
            check_compatible(index.manifest, self.identity, self.name)
        except IdentifyError as exc:
            log.warning("similar-sightings snapshot %s not used (%s): reading every sighting from SQL",
                        self.name, exc.message)
            return None
        return index

    def describe(self) -> dict[str, object]:
        """What is searched: the snapshot's size, type and tuned recall, and the sightings beside it."""
        m = self.live.base.manifest
        return {"snapshot_count": self.live.base.count, "index_type": m.index_type, "recall_at_10": m.recall_at_10,
                "max_sighting_id": m.max_reference_id, "newer": self.live.delta.count}

    # ---- snapshots -----------------------------------------------------------------------------------------
    def snapshot_if_due(self) -> None:
        """Once the delta holds `snapshot_rows` sightings, publish a snapshot in the background (one process at
        a time; searches go on meanwhile), unless another process has just published one."""
        if not self.snapshot_rows or self.live.delta.count < self.snapshot_rows:
            return
        now = time.monotonic()
        if now - self._checked_at < RECHECK_SECONDS or self._building.locked():
            return
        self._checked_at = now
        published = read_manifest(self.directory, self.name)
        if published is not None and published.max_reference_id > self.floor:
            self.index.refresh(force=True)  # switch to it now rather than at the next look
            return
        threading.Thread(target=self._snapshot_quietly, name="similar-snapshot", daemon=True).start()

    def _snapshot_quietly(self) -> None:
        try:
            self.snapshot(wait=False)
        except IdentifyError as exc:  # a budget too small for the codes, say: the operator's to change
            log.warning("the similar-sightings snapshot was not published: %s: %s", exc.code, exc.message)
        except Exception:  # a background thread has nobody to answer; the delta keeps serving meanwhile
            log.exception("publishing the similar-sightings snapshot failed; it will be tried again")

    def snapshot(self, wait: bool = True) -> Manifest | None:
        """Build the sightings up to the cut into a planned index, publish it and search it from now on; the
        manifest published, or None when another process is publishing (and `wait` is false) or nothing is new.
        """
        with self._building:
            with exclusive_lock(self.directory / f".{self.name}.lock", wait) as held:
                if not held:
                    return None
                manifest = self._build()
            if manifest is not None:
                # Searches under way finish on the old index. A sighting this process commits while the new
                # one reads SQL may reach only the old one; the new one's next refresh reads it from SQL.
                self.index.refresh(force=True)
            return manifest

    def _build(self) -> Manifest | None:
        settled = datetime.now(timezone.utc) - timedelta(seconds=self.settle_seconds)
        cut = self.sightings.last_id(self.model_id, created_before=settled)
        published = read_manifest(self.directory, self.name)
        if cut <= 0 or (published is not None and published.max_reference_id >= cut):
            return None
        started = time.perf_counter()
        parts = list(self.sightings.vectors_upto(self.model_id, cut, self.identity.embedding_dim))
        if not parts:
            return None
        ids = np.concatenate([i for i, _ in parts])
        vectors = np.concatenate([v for _, v in parts])
        index, plan = build_planned_index(ids, vectors, memory_budget=self.memory_budget)
        manifest = new_manifest(self.identity, plan, len(ids), int(ids.max()))
        publish(index, manifest, self.directory, self.name)
        log.info("published the similar-sightings snapshot %s: %d sightings up to id %d, %s, in %.1f s",
                 self.name, len(ids), manifest.max_reference_id, plan.index_type, time.perf_counter() - started)
        return manifest
