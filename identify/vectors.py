"""FAISS indexes: choosing the type, building from SQL's vectors, publishing atomically, loading with checks.

Cosine similarity is the inner product of L2-normalised vectors. Every index is wrapped in `IndexIDMap2`,
so FAISS ids are SQL reference ids. Layout under the indexes dir:

    <name>                      symlink to the current version (swapped by rename: readers never see half)
    .versions/<name>/<stamp>/   index.faiss + manifest.json of one published version
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from identify.errors import IdentifyError

log = logging.getLogger(__name__)

METRIC = "cosine"
FLAT_LIMIT = 100_000  # exact search up to here (FAISS wiki: brute force is fine below ~100k-1M)
INDEX_TYPES = ("auto", "flat", "ivf", "hnsw")
KEEP_VERSIONS = 2  # the current version and the one before it, for a manual rollback
# k-means wants 39 to 256 points per centroid (FAISS); 64 keeps a million-vector build to minutes on a CPU.
TRAIN_POINTS_PER_LIST = 64
TARGET_RECALL = 0.95  # IVF: nprobe is raised until recall@10 on a sample of the collection reaches this
IVF_MIN_SPEEDUP = 2.0  # below this, exact search (recall 1) is worth its cost


def faiss_module() -> Any:
    try:
        import faiss
    except ImportError:
        raise IdentifyError(
            "faiss_missing", "FAISS is not installed: pip install 'identify[cpu]' (or 'identify[gpu]')"
        ) from None
    return faiss


def gpu_count() -> int:
    faiss = faiss_module()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


@dataclass(frozen=True)
class IndexPlan:
    index_type: str  # flat, ivf, hnsw
    factory: str  # FAISS index_factory string, without the IDMap2 wrapper
    nprobe: int | None = None  # IVF: lists searched per query
    ef_search: int | None = None  # HNSW: candidate list size per query


def plan_index(count: int, requested: str = "auto") -> IndexPlan:
    """The index for `count` vectors: exact up to FLAT_LIMIT, else IVF with 4*sqrt(N) lists (autofaiss)."""
    if requested not in INDEX_TYPES:
        raise IdentifyError("bad_index_type", f"index type must be one of {', '.join(INDEX_TYPES)}")
    index_type = requested if requested != "auto" else ("flat" if count <= FLAT_LIMIT else "ivf")
    if index_type == "flat":
        return IndexPlan("flat", "Flat")
    if index_type == "hnsw":
        return IndexPlan("hnsw", "HNSW32", ef_search=128)
    # IVF needs ~39 training points per list; small collections get fewer lists rather than a bad clustering.
    nlist = max(1, min(int(4 * math.sqrt(max(count, 1))), count // 39))
    return IndexPlan("ivf", f"IVF{nlist},Flat", nprobe=max(1, min(nlist, nlist // 16 + 8)))


def normalised(vectors: np.ndarray) -> np.ndarray:
    """A float32 copy with unit rows (zero rows stay zero)."""
    out = np.array(vectors, dtype=np.float32, copy=True, order="C")
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


@dataclass(frozen=True)
class Manifest:
    model: str
    model_sha256: str
    network: str
    dim: int
    metric: str
    count: int
    index_type: str
    factory: str
    nprobe: int | None
    ef_search: int | None
    max_reference_id: int  # rows above this id were added to SQL after the build (catch up from SQL)
    created: str
    version: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_file(cls, path: Path) -> "Manifest":
        try:
            data = json.loads(path.read_text())
            return cls(**{key: data[key] for key in cls.__dataclass_fields__})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IdentifyError("index_corrupt", f"{path} is not a readable manifest ({exc})", 500) from None


class VectorIndex:
    """A FAISS index over normalised embeddings whose ids are SQL reference ids, with its manifest."""

    def __init__(self, index: Any, manifest: Manifest) -> None:
        self.index = index
        self.manifest = manifest
        self._apply_search_parameters()

    def _apply_search_parameters(self) -> None:
        faiss = faiss_module()
        inner = faiss.downcast_index(self.index.index) if hasattr(self.index, "index") else self.index
        if self.manifest.nprobe is not None and hasattr(inner, "nprobe"):
            inner.nprobe = self.manifest.nprobe
        if self.manifest.ef_search is not None and hasattr(inner, "hnsw"):
            inner.hnsw.efSearch = self.manifest.ef_search

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, reference ids), each (n, k'), best first; k' = min(k, count); ids -1 mean none."""
        k = min(k, self.count)
        if k == 0:
            n = len(queries)
            return np.empty((n, 0), dtype=np.float32), np.empty((n, 0), dtype=np.int64)
        return self.index.search(normalised(queries), k)


def build_faiss_index(ids: np.ndarray, vectors: np.ndarray, plan: IndexPlan) -> Any:
    """A trained, filled `IDMap2` index (inner product) over the normalised vectors; on GPU when present."""
    faiss = faiss_module()
    unit = normalised(vectors)
    index = faiss.index_factory(unit.shape[1], f"IDMap2,{plan.factory}", faiss.METRIC_INNER_PRODUCT)
    if plan.index_type == "ivf":
        _train_ivf(faiss, index, unit)
    index.add_with_ids(unit, np.ascontiguousarray(ids, dtype=np.int64))
    return index


def _train_ivf(faiss: Any, index: Any, unit: np.ndarray) -> None:
    """Spherical k-means for the coarse quantizer, on the GPUs when there are any (the costly part).

    CPU and GPU share this path; only the index that assigns points to centroids moves."""
    ivf = faiss.extract_index_ivf(index)
    sample = unit
    if len(unit) > TRAIN_POINTS_PER_LIST * ivf.nlist:
        sample = unit[np.random.default_rng(0).choice(len(unit), TRAIN_POINTS_PER_LIST * ivf.nlist, replace=False)]
    clustering = faiss.Clustering(unit.shape[1], ivf.nlist)
    clustering.spherical = True  # centroids on the unit sphere, as the vectors are
    assigner = faiss.IndexFlatIP(unit.shape[1])
    if gpu_count() > 0:
        assigner = faiss.index_cpu_to_all_gpus(assigner)
    clustering.train(np.ascontiguousarray(sample), assigner)
    ivf.quantizer.add(faiss.vector_to_array(clustering.centroids).reshape(ivf.nlist, -1))
    ivf.is_trained = index.is_trained = True


def _best_of_two(search: Any) -> tuple[Any, float]:
    """The result of `search()` and its faster time of two runs (the first may pay for cold caches)."""
    times = []
    for _ in range(2):
        started = time.perf_counter()
        result = search()
        times.append(time.perf_counter() - started)
    return result, min(times)


def tune_nprobe(index: Any, vectors: np.ndarray, target: float = TARGET_RECALL, queries: int = 200,
                k: int = 10) -> int | None:
    """The smallest nprobe (1, 2, 4, ... lists) whose recall@k against exact search reaches `target`, or None
    when IVF is then not at least IVF_MIN_SPEEDUP times faster than exact search (uniform data is like that:
    exact search is then the better index, with recall 1).

    The queries are a sample of the collection, each one's own row left out (a new photo is not indexed)."""
    faiss = faiss_module()
    unit = normalised(vectors)
    rows = np.random.default_rng(1).choice(len(unit), min(queries, len(unit)), replace=False)
    sample = np.ascontiguousarray(unit[rows])
    id_map = faiss.vector_to_array(index.id_map)
    (_, exact), exact_seconds = _best_of_two(lambda: faiss.knn(sample, unit, k + 1, metric=faiss.METRIC_INNER_PRODUCT))
    truth = [set(id_map[row].tolist()) - {own} for row, own in zip(exact, id_map[rows], strict=True)]
    wanted = sum(len(t) for t in truth)
    ivf = faiss.extract_index_ivf(index)
    nprobe = 1
    while nprobe < ivf.nlist:
        ivf.nprobe = nprobe
        (_, found), ivf_seconds = _best_of_two(lambda: index.search(sample, k + 1))
        hits = sum(len(t & set(row.tolist())) for t, row in zip(truth, found, strict=True))
        if hits >= target * wanted:
            return nprobe if ivf_seconds * IVF_MIN_SPEEDUP <= exact_seconds else None
        nprobe *= 2
    return None


def build_planned_index(ids: np.ndarray, vectors: np.ndarray, requested: str = "auto") -> tuple[Any, IndexPlan]:
    """The index `build-index` publishes, and its plan. An IVF index gets the nprobe that reaches
    TARGET_RECALL; under `auto`, a collection where IVF cannot do that faster than exact search gets Flat."""
    plan = plan_index(len(ids), requested)
    index = build_faiss_index(ids, vectors, plan)
    if plan.index_type != "ivf":
        return index, plan
    nprobe = tune_nprobe(index, vectors)
    if nprobe is None and requested == "auto":
        log.info("IVF reaches recall %.2f no faster than exact search here: publishing an exact index", TARGET_RECALL)
        plan = plan_index(len(ids), "flat")
        return build_faiss_index(ids, vectors, plan), plan
    nlist = faiss_module().extract_index_ivf(index).nlist
    return index, dataclasses.replace(plan, nprobe=nprobe or int(nlist))


def to_search_device(index: VectorIndex) -> VectorIndex:
    """The same index on all GPUs when there are any (FAISS batches the queries there), else unchanged."""
    if gpu_count() == 0:
        return index
    faiss = faiss_module()
    try:
        return VectorIndex(faiss.index_cpu_to_all_gpus(index.index), index.manifest)
    except RuntimeError as exc:  # an index type without a GPU implementation (HNSW) stays on the CPU
        log.warning("index stays on the CPU: %s", exc)
        return index


def _version_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]


def publish(index: Any, manifest: Manifest, indexes_dir: Path, name: str) -> Path:
    """Write the index and manifest beside the current version, then swap the `<name>` link by rename."""
    faiss = faiss_module()
    versions = indexes_dir / ".versions" / name
    version_dir = versions / manifest.version
    version_dir.mkdir(parents=True)
    faiss.write_index(index, str(version_dir / "index.faiss"))
    (version_dir / "manifest.json").write_text(manifest.to_json())
    link = indexes_dir / name
    if link.exists() and not link.is_symlink():
        raise IdentifyError("index_path_taken", f"{link} exists and is not an index published by identify")
    tmp_link = indexes_dir / f".{name}.{uuid.uuid4().hex}.tmp"
    os.symlink(os.path.relpath(version_dir, indexes_dir), tmp_link)
    os.replace(tmp_link, link)
    _prune_versions(versions, keep=version_dir)
    return link


def _prune_versions(versions: Path, keep: Path) -> None:
    old = sorted((p for p in versions.iterdir() if p.is_dir() and p != keep), key=lambda p: p.name)
    for path in old[: max(0, len(old) - (KEEP_VERSIONS - 1))]:
        shutil.rmtree(path, ignore_errors=True)


def new_manifest(identity: Any, plan: IndexPlan, count: int, max_reference_id: int) -> Manifest:
    return Manifest(
        model=identity.name,
        model_sha256=identity.sha256,
        network=identity.network,
        dim=identity.embedding_dim,
        metric=METRIC,
        count=count,
        index_type=plan.index_type,
        factory=plan.factory,
        nprobe=plan.nprobe,
        ef_search=plan.ef_search,
        max_reference_id=max_reference_id,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        version=_version_stamp(),
    )


def read_manifest(indexes_dir: Path, name: str) -> Manifest | None:
    path = indexes_dir / name / "manifest.json"
    return Manifest.from_file(path) if path.exists() else None


def load_index(indexes_dir: Path, name: str) -> VectorIndex:
    """The published index `name`. Both files are read from one resolved version, never from two."""
    faiss = faiss_module()
    link = indexes_dir / name
    if not link.exists():
        raise IdentifyError("unknown_index", f"no index named {name!r} under {indexes_dir}", 404)
    version_dir = link.resolve()
    manifest = Manifest.from_file(version_dir / "manifest.json")
    try:
        index = faiss.read_index(str(version_dir / "index.faiss"))
    except RuntimeError as exc:
        raise IdentifyError("index_corrupt", f"{version_dir / 'index.faiss'} does not read ({exc})", 500) from None
    if index.ntotal != manifest.count or index.d != manifest.dim:
        raise IdentifyError("index_corrupt", f"{version_dir} holds {index.ntotal}x{index.d}, manifest says "
                            f"{manifest.count}x{manifest.dim}", 500)
    return VectorIndex(index, manifest)


def check_compatible(manifest: Manifest, identity: Any, name: str) -> None:
    """Refuse, loudly, to search an index with another model's embeddings."""
    if manifest.model_sha256 != identity.sha256:
        raise IdentifyError(
            "index_model_mismatch",
            f"index {name!r} was built with model {manifest.model} ({manifest.model_sha256[:12]}), "
            f"not {identity.name} ({identity.sha256[:12]})",
            409,
        )
    if manifest.dim != identity.embedding_dim:
        raise IdentifyError(
            "index_dim_mismatch", f"index {name!r} has dimension {manifest.dim}, the model gives {identity.embedding_dim}", 409
        )
