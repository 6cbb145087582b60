"""Drives a build: hash the sources, skip what SQL already holds, embed the rest in batches, publish."""

from __future__ import annotations

import contextlib
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from identify.backbone import Backbone
from identify.config import Settings
from identify.errors import IdentifyError
from identify.images import sha256_file
from identify.locks import exclusive_lock
from identify.parts import Parts
from identify.references import References
from identify.storage import Store
from identify.vectors.plan import build_planned_index, plan_index
from identify.vectors.catalog import Manifest, read_manifest
from identify.vectors.published import check_compatible, new_manifest, publish
from index_builder.dataset import ReferenceDataset, default_workers, loader
from index_builder.distributed import Ranks
from index_builder.sources import ReferenceSource
from index_builder.writer import EmbeddingWriter

log = logging.getLogger(__name__)


@dataclass
class BuildReport:
    embedded: int = 0  # newly embedded photos
    skipped: int = 0  # unreadable, corrupt or non-image files, and label conflicts
    total: int = 0  # files seen in the source
    already_indexed: int = 0  # embedded by an earlier run (same content hash, same model)
    duplicates: int = 0  # same content as another file of this run
    count: int = 0  # vectors in the published index
    index: str = ""
    index_type: str = ""
    recall_at_10: float | None = None  # IVF, IVF-PQ: recall@10 against exact search, as tuned
    published: bool = False  # False when nothing changed and the published index was kept
    seconds: float = 0.0
    images_per_second: float = 0.0
    failures: list[dict[str, str]] = field(default_factory=list)
    rank: int = 0  # under torchrun: which process this is, of world_size
    world_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def shard_dict(self) -> dict[str, Any]:
        """What a rank other than 0 did with its shard (rank 0 reports the whole build, `count` included)."""
        keys = ("rank", "world_size", "embedded", "skipped", "already_indexed", "duplicates", "failures")
        return {key: getattr(self, key) for key in keys}


@dataclass(frozen=True)
class BuildOptions:
    name: str
    index_type: str = "auto"
    batch_size: int = 32
    workers: int | None = None
    progress: bool = True
    memory_budget: int | None = None  # bytes the published index may take; past it, IVF-PQ


def _write(writer: EmbeddingWriter, chosen: list[tuple[ReferenceSource, str]], embeddings: np.ndarray,
           probabilities: np.ndarray) -> int:
    writer.write([source for source, _ in chosen], [sha for _, sha in chosen], embeddings, probabilities)
    return len(chosen)


def _hash_all(paths: Sequence[Path]) -> list[str | None]:
    def digest(path: Path) -> str | None:
        try:
            return sha256_file(path)
        except OSError:
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:  # I/O bound: threads overlap the reads
        return list(pool.map(digest, paths))


class IndexBuilder:
    def __init__(self, settings: Settings, backbone: Backbone, store: Store, options: BuildOptions,
                 references: References | None = None, ranks: Ranks | None = None) -> None:
        if options.batch_size < 1:
            raise IdentifyError("bad_batch_size", "--batch-size must be at least 1")
        plan_index(0, options.index_type)  # reject a bad --index-type before any work
        self.settings = settings
        self.backbone = backbone
        self.store = store
        self.references = references or Parts(settings, store).references
        self.options = options
        self.ranks = ranks or Ranks()
        self.report = BuildReport(rank=self.ranks.rank, world_size=self.ranks.world_size)

    def _fail(self, source: ReferenceSource, code: str, message: str) -> None:
        log.warning("skipped %s: %s", source.path, message)
        self.report.skipped += 1
        self.report.failures.append({"path": str(source.path), "code": code, "message": message})

    def _triage(self, sources: Sequence[ReferenceSource], model_id: int, index_id: int) -> list[tuple[ReferenceSource, str]]:
        """The (source, sha256) pairs still to embed; counts and records everything else."""
        hashes = _hash_all([s.path for s in sources])
        known = self.references.known(model_id, [h for h in hashes if h])
        seen: set[str] = set()
        to_embed, already = [], []
        for source, sha in zip(sources, hashes, strict=True):
            if sha is None:
                self._fail(source, "unreadable_file", "cannot be read")
            elif sha in seen:
                self.report.duplicates += 1
            elif sha in known and known[sha].species != self.references.key_of(source.species):
                self._fail(source, "label_conflict", f"same photo is already a reference of {known[sha].species}")
            elif sha in known and known[sha].embedded:
                already.append(known[sha].id)
            else:
                to_embed.append((source, sha))
            if sha:
                seen.add(sha)
        self.report.already_indexed = len(already)
        self.references.add_members(index_id, already)
        return to_embed

    def _embed(self, pending: list[tuple[ReferenceSource, str]], writer: EmbeddingWriter) -> None:
        if not pending:
            return
        dataset = ReferenceDataset([source for source, _ in pending], self.backbone.decode_transform,
                                   self.backbone.identity.decode_size)
        workers = default_workers() if self.options.workers is None else self.options.workers
        desc = f"embedding (rank {self.ranks.rank})" if self.ranks.distributed else "embedding"
        # One batch's SQL commit runs in a thread while the next batch goes through the network (the commit's
        # wait for the disk then costs the forward nothing). At most one is in flight, in order, so a build
        # that stops keeps every batch before the one it was writing; a failed write fails the build.
        with tqdm(total=len(pending), unit="img", desc=desc, disable=not self.options.progress) as bar, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="build-writer") as writes:
            in_flight: Future[int] | None = None
            for batch in loader(dataset, self.options.batch_size, workers):
                for position, code, message in batch.failures:
                    self._fail(pending[position][0], code, message)
                if batch.tensors is not None:
                    output = self.backbone.forward_decoded(batch.tensors)
                    chosen = [pending[p] for p in batch.positions]
                    self.report.embedded += in_flight.result() if in_flight else 0
                    in_flight = writes.submit(_write, writer, chosen, output.embeddings, output.probabilities)
                bar.update(len(batch.positions) + len(batch.failures))
            self.report.embedded += in_flight.result() if in_flight else 0

    def _publish(self, index_id: int, model_id: int) -> None:
        identity = self.backbone.identity
        ids, vectors = self.references.index_vectors(index_id, model_id, identity.embedding_dim)
        if len(ids) == 0:
            raise IdentifyError("nothing_embedded", f"no photo could be embedded into {self.options.name!r}")
        index, plan = build_planned_index(ids, vectors, self.options.index_type, self.options.memory_budget)
        manifest = new_manifest(identity, plan, len(ids), int(ids.max()), self.references.retired_members(index_id))
        link = publish(index, manifest, self.settings.indexes_dir, self.options.name)
        self.report.published = True
        self.report.count, self.report.index_type, self.report.index = len(ids), plan.index_type, str(link)
        self.report.recall_at_10 = plan.recall_at_10

    def _is_current(self, index_id: int, manifest: Manifest | None) -> bool:
        """True when the published index (`manifest`) already holds every member (nothing to rebuild)."""
        requested = self.options.index_type
        if manifest is None or (requested != "auto" and requested != manifest.index_type):
            return False
        if manifest.count != self.references.member_count(index_id):
            return False
        budget = self.options.memory_budget
        if budget is not None and plan_index(manifest.count, requested, manifest.dim, budget).index_type != \
                manifest.index_type:  # the budget changed what the collection needs
            return False
        self.report.count, self.report.index_type = manifest.count, manifest.index_type
        self.report.recall_at_10 = manifest.recall_at_10
        self.report.index = str(self.settings.indexes_dir / self.options.name)
        return True

    def run(self, sources: Sequence[ReferenceSource]) -> BuildReport:
        if not self.ranks.leader:  # rank 0 holds the index's lock for the whole launch
            return self._run(sources)
        with build_lock(self.settings.indexes_dir, self.options.name):
            return self._run(sources)

    def _begin(self, sources: Sequence[ReferenceSource]) -> tuple[int, int, int | None]:
        """Rank 0's part before the others start: the model, the index, every species (so that no two ranks race
        to create one) and the build row; returns (model id, index id, build id)."""
        model_id = self.store.register_model(self.backbone.identity)
        index_id = self.store.open_index(self.options.name, model_id)
        self.references.ensure_species(sorted({source.species for source in sources}))
        abandoned = self.store.abandon_builds(index_id)  # we hold the lock: no other build of it is alive
        if abandoned:
            log.warning("marked %d earlier build(s) of %r abandoned (killed before they finished)", abandoned,
                        self.options.name)
        return model_id, index_id, self.store.start_build(index_id)

    def _look_up(self) -> tuple[int, int, int | None]:
        """The other ranks' part, once rank 0 has begun: the same model and index, and no build row of their own."""
        model_id = self.store.register_model(self.backbone.identity)
        return model_id, self.store.open_index(self.options.name, model_id), None

    def _run(self, sources: Sequence[ReferenceSource]) -> BuildReport:
        started = time.perf_counter()
        identity = self.backbone.identity
        published = read_manifest(self.settings.indexes_dir, self.options.name)
        if published is not None:
            check_compatible(published, identity, self.options.name)
        begun = self._begin(sources) if self.ranks.leader else None
        self.ranks.barrier()
        model_id, index_id, build_id = begun or self._look_up()
        self.report.total = len(sources)
        try:
            pending = self._triage(self.ranks.shard(sources), model_id, index_id)
            embed_started = time.perf_counter()
            self._embed(pending, EmbeddingWriter(self.references, index_id, model_id))
            embed_seconds = time.perf_counter() - embed_started
            self._sum_over_ranks()  # also the barrier: every shard is in SQL past this line
            if self.ranks.leader and (self.report.embedded or not self._is_current(index_id, published)):
                self._publish(index_id, model_id)
        except BaseException:
            if build_id is not None:
                with contextlib.suppress(Exception):  # the original error matters more than this bookkeeping
                    self.store.finish_build(build_id, "failed", embedded=self.report.embedded,
                                            skipped=self.report.skipped)
            raise
        self.report.seconds = round(time.perf_counter() - started, 3)
        self.report.images_per_second = round(self.report.embedded / embed_seconds, 2) if self.report.embedded else 0.0
        if build_id is not None:
            self.store.finish_build(
                build_id, "published" if self.report.published else "unchanged", index_type=self.report.index_type,
                embedded=self.report.embedded, skipped=self.report.skipped, count=self.report.count,
                path=self.report.index,
            )
        return self.report

    def _sum_over_ranks(self) -> None:
        """Rank 0's report counts the whole build; the others keep their shard's counts."""
        fields = ("embedded", "skipped", "already_indexed", "duplicates")
        totals = self.ranks.total([getattr(self.report, name) for name in fields])
        if self.ranks.leader:
            for name, value in zip(fields, totals, strict=True):
                setattr(self.report, name, value)


@contextlib.contextmanager
def build_lock(indexes_dir: Path, name: str) -> Iterator[None]:
    """One build of an index at a time, across processes: an exclusive lock on indexes/.locks/<name>. The kernel
    drops it when its process dies, however it dies, so a build that finds it free knows that every build row
    still `running` belongs to a dead process."""
    with exclusive_lock(indexes_dir / ".locks" / name) as held:
        if not held:
            raise IdentifyError("build_running", f"another build of index {name!r} is running; wait for it "
                                "to finish", 409)
        yield
